// An account removed while one of its requests is already past authentication (or while another
// process still holds its credentials for a moment): its writes answer 401, never a 500 from the
// foreign key to the gone account.
import t from 'tap'
import { buildTestApp, client, createUser } from '../helpers/app.ts'

const { app } = await buildTestApp(t, { runWorkers: false })

t.test('writes of a just-removed account are 401', async t => {
  const user = await createUser(app)
  const api = client(app, user)
  t.equal((await api.get('/api/2.0/drives/')).statusCode, 200, 'credentials verified and cached')
  // removed behind this process's back: no announcement, so the cached credentials still pass
  await app.prisma.$executeRaw`DELETE FROM accounts WHERE id = ${user.id}::uuid`
  const drive = await api.post('/api/2.0/drives/', { name: 'late', size: 1024 ** 3, media: 'disk' })
  t.equal(drive.statusCode, 401, drive.body)
  t.equal(drive.json()[0].error_type, 'permission')
  const server = await api.post('/api/2.0/servers/', { name: 'late', cpu: 1000, mem: 1024 ** 3, vnc_password: 'secret12' })
  t.equal(server.statusCode, 401, server.body)
  t.equal(await app.prisma.drive.count({ where: { ownerId: user.id } }), 0, 'nothing half-made')
})
