// Clone planning as pure functions: drive clone definitions, server clone plans.
import t from 'tap'
import {
  HELD_RUN_AT, cloneNic, copyDescription, planDriveClone, planServerClone,
  startsAtOnce, vncPasswordFrom
} from '../../src/domain/clone-plan.ts'

const source = { name: 'web', size: 1000, media: 'disk', storageType: 'dssd', allowMultimount: false, affinities: ['ssd'], meta: { a: '1' }, tags: ['t1'] }
const now = new Date('2026-11-23T10:11:12Z')

t.test('drive clone: copies the source, naming by strategy, body fields win', async t => {
  t.same(planDriveClone(source, {}, 'NONE', now), { ...source })
  t.equal(planDriveClone(source, {}, 'COUNTER', now).name, 'web_1')
  t.equal(planDriveClone(source, {}, 'DATE', now).name, 'web-2026-11-23')
  t.equal(planDriveClone(source, {}, 'TIMESTAMP', now).name, 'web-2026-11-23 10:11:12')
  const custom = planDriveClone(source, { name: 'x', size: 2000, media: 'cdrom', storage_type: 'ssd', meta: {}, tags: [], affinities: [] }, 'COUNTER', now)
  t.same(custom, { ...source, name: 'x', size: 2000, media: 'cdrom', storageType: 'ssd', meta: {}, tags: [], affinities: [] })
  const copy = planDriveClone(source, {}, 'NONE', now)
  copy.meta.b = '2'
  t.same(source.meta, { a: '1' }, 'meta is copied, not shared')
})

t.test('drive clone: size below the source, above the maximum, and ephemeral drives are refused', async t => {
  t.throws(() => planDriveClone(source, { size: 999 }, 'NONE'), { name: 'ClonePlanError', point: 'size' })
  t.throws(() => planDriveClone(source, { size: 5000 }, 'NONE', now, 4000), { name: 'ClonePlanError', point: 'size' })
  t.equal(planDriveClone(source, { size: 1000 }, 'NONE').size, 1000, 'equal size is fine')
  t.throws(() => planDriveClone({ ...source, storageType: 'local_nvme' }, {}, 'NONE'), { name: 'ClonePlanError', point: 'storage_type' })
  t.throws(() => planDriveClone(source, { storage_type: 'local_nvme' }, 'NONE'), { name: 'ClonePlanError', point: 'storage_type' })
})

t.test('server clone: disks cloned in place with strategy names, cdroms shared, NICs dhcp with new MACs', async t => {
  let macs = 0
  const plan = planServerClone(
    {
      name: 'srv',
      vncPassword: 'secret',
      nics: [
        { mac: '22:00:00:00:00:01', model: 'virtio', ip_v4_conf: { conf: 'static', ip: '1.2.3.4' }, ip_v6_conf: null, vlan: null },
        { mac: '22:00:00:00:00:02', model: 'e1000', ip_v4_conf: null, ip_v6_conf: null, vlan: 'v1' },
        { mac: '22:00:00:00:00:03', model: 'virtio', ip_v4_conf: { conf: 'dhcp', ip: null }, ip_v6_conf: { conf: 'static', ip: '::1' }, vlan: null }
      ]
    },
    [
      { driveId: 'd1', device: 'virtio', devChannel: '0:0', bootOrder: 1, media: 'disk', driveName: 'root' },
      { driveId: 'c1', device: 'ide', devChannel: '0:1', bootOrder: null, media: 'cdrom', driveName: 'iso' },
      { driveId: 'd2', device: 'virtio', devChannel: '0:1', bootOrder: 2, media: 'disk', driveName: 'data_3' }
    ],
    {},
    'COUNTER',
    { now, newMac: () => `22:ff:00:00:00:0${++macs}`, randomPassword: () => 'RANDOM12' }
  )
  t.equal(plan.name, 'srv_1')
  t.equal(plan.vncPassword, 'secret', 'copied by default')
  t.same(plan.mounts, [
    { device: 'virtio', devChannel: '0:0', bootOrder: 1, clone: { sourceId: 'd1', name: 'root_1' } },
    { device: 'ide', devChannel: '0:1', bootOrder: null, sharedDriveId: 'c1' },
    { device: 'virtio', devChannel: '0:1', bootOrder: 2, clone: { sourceId: 'd2', name: 'data_4' } }
  ])
  t.same(plan.nics.map(n => n.mac), ['22:ff:00:00:00:01', '22:ff:00:00:00:02', '22:ff:00:00:00:03'])
  t.same(plan.nics[0].ip_v4_conf, { conf: 'dhcp', ip: null })
  t.equal(plan.nics[1].vlan, 'v1', 'vlan NICs keep their vlan')
  t.equal(plan.nics[1].model, 'e1000')
  t.same(plan.nics[2].ip_v6_conf, { conf: 'dhcp', ip: null })

  const named = planServerClone({ name: 'srv', vncPassword: 'secret', nics: [] }, [], { name: 'mine', random_vnc_password: true }, 'COUNTER',
    { newMac: () => 'x', randomPassword: () => 'RANDOM12' })
  t.equal(named.name, 'mine')
  t.equal(named.vncPassword, 'RANDOM12')
})

t.test('a NIC clone does not touch the source NIC', async t => {
  const nic = { mac: 'a', ip_v4_conf: { conf: 'static', ip: '1.1.1.1' }, ip_v6_conf: null }
  cloneNic(nic, 'b')
  t.same(nic, { mac: 'a', ip_v4_conf: { conf: 'static', ip: '1.1.1.1' }, ip_v6_conf: null })
})

t.test('random VNC passwords are 8 alphanumerics without modulo bias', async t => {
  t.match(vncPasswordFrom(new Uint8Array(32).map((_, i) => i * 7)), /^[A-Za-z0-9]{8}$/)
  t.equal(vncPasswordFrom(Uint8Array.from([255, 254, 0, 1, 2, 3, 4, 5, 6, 61])), 'ABCDEFG9', 'bytes >= 248 are skipped')
  t.throws(() => vncPasswordFrom(new Uint8Array(3)), RangeError)
})

t.test('parallelism: the first N children start, the others are held far in the future', async t => {
  t.same([0, 1, 2, 3].map(i => startsAtOnce(i, 2)), [true, true, false, false])
  t.equal(startsAtOnce(0, 0), true, 'at least one runs')
  t.ok(HELD_RUN_AT.getTime() > Date.now() + 100 * 365 * 86400_000)
})

t.test('copy progress line', async t => {
  t.equal(copyDescription(1288490188, 10 * 1024 ** 3), 'copied 1.2 GiB of 10.0 GiB')
  t.equal(copyDescription(0, 5 * 1024 ** 2), 'copied 0 B of 5.0 MiB')
})
