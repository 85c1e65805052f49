// The KMS card's descriptor in systemd's file descriptor store (FileDescriptorStoreMax= in
// multihead.service). When the supervisor dies (a crash, kill -9, the watchdog), systemd keeps
// the card's file open: the kernel keeps scanning out the last frames and the file stays DRM
// master, so the screens do not go black while the service restarts. The next instance gets
// the descriptor back in LISTEN_FDS and takes the card over (`KmsDevice.open(path, fd)`).
// A deliberate stop removes it from the store (the screens go dark then, as they should).

/** FDNAME for a card node: `kms-card0`. systemd allows no ':' and at most 255 characters. */
export function fdStoreName(devicePath: string): string {
  const node = devicePath.split('/').pop() ?? devicePath;
  return `kms-${node.replace(/[^A-Za-z0-9._-]/g, '_')}`.slice(0, 255);
}

/**
 * The descriptors systemd passed to this process, by FDNAME (sd_listen_fds_with_names):
 * LISTEN_FDS of them from fd 3 up, only if LISTEN_PID is this process (an inherited
 * environment from a parent would name descriptors this process does not have).
 */
export function listenFds(env: NodeJS.ProcessEnv, pid: number): Map<string, number> {
  const fds = new Map<string, number>();
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== pid) return fds;
  const count = Number(env.LISTEN_FDS);
  if (!Number.isSafeInteger(count) || count <= 0 || count > 1024) return fds;
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  for (let i = 0; i < count; i++) {
    const name = names[i] || 'unknown';
    if (!fds.has(name)) fds.set(name, 3 + i);
  }
  return fds;
}
