// The contract between the control plane and whatever runs guests. The server_start and
// server_stop jobs call it; a real backend (libvirt, a cloud API) implements these methods.
export {};
//# sourceMappingURL=driver.js.map