// Availability groups (spec §2.3, §3.3; CloudSigma's availability_groups page): which of an
// account's drives share a storage host, and which of its servers a compute host. Pure: the caller
// says where each object sits.

/** An object and the host it sits on; null when no single host holds it (a replicated Ceph image). */
export interface Placed {
  id: string
  host: string | null
}

/**
 * GET /{res}/availability_groups/: one array per host, holding the ids on that host in the order
 * given; an object on no single host is a group of its own. Every object given is in exactly one
 * group, so a client can read both "who shares a host" and "who is alone" from one answer.
 */
export function availabilityGroups (placed: Placed[]): string[][] {
  const byHost = new Map<string, string[]>()
  const groups: string[][] = []
  for (const p of placed) {
    if (p.host === null) {
      groups.push([p.id])
      continue
    }
    let group = byHost.get(p.host)
    if (!group) {
      group = []
      byHost.set(p.host, group)
      groups.push(group)
    }
    group.push(p.id)
  }
  return groups
}

/**
 * GET /{res}/availability_groups/{uuid}/: the group of `id`, itself included (as CloudSigma
 * answers); [] when it is on no host (a server that is not running).
 */
export function groupOf (groups: string[][], id: string): string[] {
  return groups.find(g => g.includes(id)) ?? []
}
