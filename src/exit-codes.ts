/** sysexits(3) codes, so systemd units and provisioning scripts can tell failures apart. */
export const ExitCode = {
  ok: 0,
  /** Stopped because a graceful shutdown did not finish in time. */
  failure: 1,
  /** EX_USAGE: unknown command or option. */
  usage: 64,
  /** EX_UNAVAILABLE: the supervisor's status endpoint cannot be reached or refused the request. */
  unavailable: 69,
  /** EX_SOFTWARE: an internal error the supervisor could not recover from. */
  software: 70,
  /** EX_CONFIG: the configuration is invalid; restarting will not help until it is fixed. */
  config: 78,
} as const;
