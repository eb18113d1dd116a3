// The contract between the control plane and whatever runs guests. The server_start and
// server_stop jobs call it; a real backend (libvirt, a cloud API) implements these methods.

/** What a driver is told about the server it acts on. */
export interface HypervisorServer {
  id: string
  ownerId: string
  name: string
  cpu: number
  mem: bigint
  smp: number
  vncPassword: string
  drives: Array<{ driveId: string, device: string, devChannel: string, bootOrder: number | null }>
  nics: Array<{ mac: string, model: string }>
}

export interface StartResult {
  /** When the guest came up; the driver's clock. Defaults to the moment start() returned. */
  activeSince?: Date
}

/**
 * Each method resolves when the guest has reached the state, and rejects when it cannot (the job
 * then fails and the server returns to its previous status). All must honour `signal`: a
 * cancelled job aborts it. start/stop must be idempotent, since a job taken over after a crash
 * calls them again.
 */
export interface HypervisorDriver {
  readonly name: string
  start: (server: HypervisorServer, signal: AbortSignal) => Promise<StartResult>
  /** Hard power-off. */
  stop: (server: HypervisorServer, signal: AbortSignal) => Promise<void>
  /** ACPI shutdown; resolves true when the guest powered off, false when it ignored the request. */
  shutdown: (server: HypervisorServer, signal: AbortSignal) => Promise<boolean>
  /** A VNC URL for a running guest (vnc://host:port). */
  openVnc: (server: HypervisorServer) => Promise<string>
  closeVnc: (server: HypervisorServer) => Promise<void>
  /**
   * The host each of these running guests is on (GET /servers/availability_groups/). Optional: a
   * driver without it, or a guest it leaves out, is on the driver's one host (all share it).
   */
  hosts?: (serverIds: string[]) => Promise<Map<string, string>>
}
