export const USAGE = `Usage: multihead [command] [options]

Commands:
  run                     Start the supervisor (the default command)
  config check FILE       Validate FILE against the schema (environment ignored); exit 0 or 78
  config schema           Print every setting with default, env var and rule
  config show             Print the effective configuration, secrets masked
  status                  Health, display, decoders and outputs of the running supervisor
  outputs                 Each output: what it plays, frames, drops, preview URL
  logs                    Recent log lines of the running supervisor
  diagnose [DIR]          GPUs of this box (DIR: default /dev/dri): planes, formats, modifiers,
                          VAAPI profiles, and the decode-to-plane path each output will use

Options:
  -c, --config PATH       Config file (default /etc/multihead/config.json, or $MULTIHEAD_CONFIG)
      --format FORMAT     For "config schema": json (default) or markdown
      --url URL           For status/outputs/logs: the status endpoint (default from http.bind, http.port)
      --json              For status/outputs/logs/diagnose: machine-readable JSON instead of tables
  -f, --follow            For logs: keep printing new lines as they come
      --level LEVEL       For logs: only this level and above (trace ... fatal)
      --lines N           For logs: how many recent lines (1-1000, default 100)
  -V, --version           Print the app and native addon versions
  -h, --help              Print this help

Exit codes: 0 ok, 64 usage error, 69 supervisor not reachable, 70 internal error,
72 (diagnose) no DRM device, 78 invalid configuration.
`;
