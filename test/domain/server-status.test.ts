// Server power transitions and delete/update rules as pure functions.
import t from 'tap'
import {
  POWER_ACTIONS, SERVER_STATUSES, acceptsFullUpdate, activeSinceTime, canDeleteServer, isPowerAction, planPowerAction
} from '../../src/domain/server-status.ts'

t.test('start goes stopped → starting → running through server_start', async t => {
  const v = planPowerAction('start', 'stopped')
  t.ok(v.ok)
  if (v.ok) t.match(v.transition, { from: 'stopped', during: 'starting', to: 'running', operation: 'server_start' })
})

t.test('stop and shutdown go running → stopping → stopped through server_stop', async t => {
  for (const action of ['stop', 'shutdown'] as const) {
    const v = planPowerAction(action, 'running')
    t.ok(v.ok, action)
    if (v.ok) t.match(v.transition, { from: 'running', during: 'stopping', to: 'stopped', operation: 'server_stop' })
  }
})

t.test('actions that make no sense are wrong_state; during a transition they are busy', async t => {
  t.match(planPowerAction('start', 'running'), { ok: false, reason: 'wrong_state', message: /start a server that is running/ })
  t.match(planPowerAction('stop', 'stopped'), { ok: false, reason: 'wrong_state' })
  t.match(planPowerAction('shutdown', 'stopped'), { ok: false, reason: 'wrong_state' })
  t.match(planPowerAction('start', 'paused'), { ok: false, reason: 'wrong_state' })
  t.match(planPowerAction('stop', 'unavailable'), { ok: false, reason: 'wrong_state' })
  t.match(planPowerAction('start', 'starting'), { ok: false, reason: 'busy' })
  t.match(planPowerAction('stop', 'stopping'), { ok: false, reason: 'busy' })
  t.match(planPowerAction('start', 'stopping'), { ok: false, reason: 'busy' })
  // exhaustive: exactly one status allows each action
  for (const action of POWER_ACTIONS) {
    t.equal(SERVER_STATUSES.filter(s => planPowerAction(action, s).ok).length, 1, action)
  }
})

t.test('isPowerAction', async t => {
  t.ok(isPowerAction('start'))
  t.notOk(isPowerAction('clone'))
})

t.test('only a stopped server takes a full update or can be deleted', async t => {
  t.ok(acceptsFullUpdate('stopped'))
  for (const s of ['starting', 'running', 'stopping', 'paused']) t.notOk(acceptsFullUpdate(s), s)
  t.same(canDeleteServer('stopped'), { ok: true })
  t.match(canDeleteServer('running'), { ok: false, reason: 'wrong_state', message: /stop it first/ })
  t.match(canDeleteServer('starting'), { ok: false, reason: 'busy' })
  t.match(canDeleteServer('stopping'), { ok: false, reason: 'busy' })
})

t.test('active_since has no fractions and ends in +00:00', async t => {
  t.equal(activeSinceTime(new Date('2015-03-19T13:52:51.123Z')), '2015-03-19T13:52:51+00:00')
})
