// The pure parts of mounts and NICs: device slots, duplicate slots, MAC matching, IP conf rules.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { DomainError } from '../../src/domain/errors.ts'
import { devChannelProblem, parseMounts } from '../../src/features/servers/mounts.ts'
import { foreignId, generateMac, planNics, recurseSelects, type StoredNic } from '../../src/features/servers/service.ts'

function point (fn: () => unknown): string | null | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof DomainError) return err.point
    throw err
  }
  return undefined
}

t.test('dev_channel ranges per device', async t => {
  for (const ok of ['0:0', '0:1', '1:0', '1:1']) t.equal(devChannelProblem('ide', ok), undefined, `ide ${ok}`)
  t.match(devChannelProblem('ide', '2:0'), /out of range for ide/)
  t.match(devChannelProblem('ide', '0:2'), /out of range/)
  t.equal(devChannelProblem('virtio', '0:5'), undefined)
  t.equal(devChannelProblem('virtio', '12:3'), undefined)
  t.match(devChannelProblem('virtio', '0:6'), /unit 0-5/)
  t.equal(devChannelProblem('scsi', '0:0'), undefined)
  t.match(devChannelProblem('virtio', '0'), /controller:unit/)
  t.match(devChannelProblem('floppy', '0:0'), /device must be one of/)
})

t.test('parseMounts accepts uuid, URI and object, and refuses duplicate slots', async t => {
  const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()]
  const mounts = parseMounts([
    { device: 'virtio', dev_channel: '0:0', drive: a, boot_order: 1 },
    { device: 'ide', dev_channel: '0:0', drive: `/api/2.0/drives/${b}/` },
    { device: 'virtio', dev_channel: '0:1', drive: { uuid: c } }
  ])
  t.same(mounts.map(m => m.driveId), [a, b, c])
  t.same(mounts[0], { driveId: a, device: 'virtio', devChannel: '0:0', bootOrder: 1 })
  t.equal(mounts[1].bootOrder, null)
  t.equal(point(() => parseMounts([
    { device: 'virtio', dev_channel: '0:0', drive: a },
    { device: 'virtio', dev_channel: '0:0', drive: b }
  ])), 'drives', 'same device and dev_channel twice')
  t.same(parseMounts([{ device: 'virtio', dev_channel: '010:005', drive: a }])[0].devChannel, '10:5', 'leading zeros dropped')
  t.equal(point(() => parseMounts([
    { device: 'virtio', dev_channel: '00:01', drive: a },
    { device: 'virtio', dev_channel: '0:1', drive: b }
  ])), 'drives', 'one slot written two ways')
  t.equal(point(() => parseMounts([{ device: 'virtio', dev_channel: '0:0', drive: 'nope' }])), 'drives')
  t.equal(point(() => parseMounts([{ device: 'virtio', dev_channel: '0:0', drive: `/api/2.0/servers/${a}/` }])), 'drives', 'a URI of another resource')
  t.equal(point(() => parseMounts([{ device: 'ide', dev_channel: '3:0', drive: a }])), 'drives')
})

t.test('MACs are generated with the 22: prefix and never repeat', async t => {
  const taken = new Set<string>()
  for (let i = 0; i < 200; i++) {
    const mac = generateMac(taken)
    t.ok(/^22(:[0-9a-f]{2}){5}$/.test(mac)) || t.fail(mac)
    t.notOk(taken.has(mac))
    taken.add(mac)
  }
})

t.test('planNics: new NICs, kept by MAC, removed when left out, unknown MAC refused', async t => {
  const first = planNics([{ ip_v4_conf: { conf: 'dhcp' } }, { vlan: randomUUID(), model: 'e1000' }], [])
  t.equal(first.length, 2)
  t.equal(first[0].model, 'virtio', 'model defaults to virtio')
  t.equal(first[1].model, 'e1000')
  t.not(first[0].mac, first[1].mac)
  const second = planNics([{ mac: first[1].mac.toUpperCase(), vlan: first[1].vlan }, { ip_v4_conf: { conf: 'static', ip: '10.0.0.5' } }], first)
  t.equal(second[0].mac, first[1].mac, 'matched by MAC (case-insensitive), first NIC removed')
  t.equal(second[0].model, 'e1000', 'an existing NIC keeps its model')
  t.notOk([first[0].mac, first[1].mac].includes(second[1].mac), 'a NIC without mac is new')
  t.same(second[1].ip_v4_conf, { conf: 'static', ip: '10.0.0.5' })
  t.equal(point(() => planNics([{ mac: '22:00:00:00:00:01', ip_v4_conf: { conf: 'dhcp' } }], first)), 'mac', 'unknown mac')
  t.equal(point(() => planNics([{ mac: first[0].mac, ip_v4_conf: { conf: 'dhcp' } }, { mac: first[0].mac, ip_v4_conf: { conf: 'dhcp' } }], first)), 'mac', 'the same mac twice')
})

t.test('planNics: ip conf and vlan validity', async t => {
  const bad = (nic: Parameters<typeof planNics>[0][number]) => point(() => planNics([nic], [] as StoredNic[]))
  t.equal(bad({ ip_v4_conf: { conf: 'dhcp', ip: '10.0.0.1' } }), 'ip', 'dhcp must not carry an ip')
  t.equal(bad({ ip_v4_conf: { conf: 'static' } }), 'ip', 'static needs an ip')
  t.equal(bad({ ip_v4_conf: { conf: 'static', ip: 'not-an-ip' } }), 'ip')
  t.equal(bad({ ip_v6_conf: { conf: 'static', ip: '10.0.0.1' } }), 'ip', 'a v4 address in ip_v6_conf')
  t.equal(bad({ vlan: randomUUID(), ip_v4_conf: { conf: 'dhcp' } }), 'nics', 'vlan and ip conf together')
  t.equal(bad({}), 'nics', 'neither vlan nor ip conf')
  const [ok] = planNics([{ ip_v4_conf: { conf: 'static', ip: { uuid: '94.26.101.149' } } }], [])
  t.equal(ok.ip_v4_conf?.ip, '94.26.101.149', 'an IP reference object')
  t.equal(foreignId('/api/2.0/ips/94.26.101.149/', 'ips'), '94.26.101.149')
  t.equal(foreignId('/api/2.0/vlans/x/', 'ips'), undefined)
})

t.test('recurse selects drives by media', async t => {
  t.ok(recurseSelects('all_drives', 'cdrom'))
  t.ok(recurseSelects('disks', 'disk'))
  t.notOk(recurseSelects('disks', 'cdrom'))
  t.ok(recurseSelects('cdroms', 'cdrom'))
  t.notOk(recurseSelects('cdroms', 'disk'))
})
