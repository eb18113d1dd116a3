export async function hypervisorView(db, id) {
    const row = await db.server.findUnique({ where: { id }, include: { mounts: { orderBy: { position: 'asc' } } } });
    if (!row || row.deleted)
        return undefined;
    return {
        id: row.id,
        ownerId: row.ownerId,
        name: row.name,
        cpu: row.cpu,
        mem: row.mem,
        smp: row.smp,
        vncPassword: row.vncPassword,
        status: row.status,
        lockedByJob: row.lockedByJob,
        drives: row.mounts.map(m => ({ driveId: m.driveId, device: m.device, devChannel: m.devChannel, bootOrder: m.bootOrder })),
        nics: (row.nics ?? []).map(n => ({ mac: n.mac, model: n.model }))
    };
}
//# sourceMappingURL=view.js.map