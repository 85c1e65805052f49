export const USAGE = `Usage: multihead [command] [options]

Commands:
  run                     Start the supervisor (the default command)
  config check FILE       Validate FILE against the schema (environment ignored); exit 0 or 78
  config schema           Print every setting with default, env var and rule
  config show             Print the effective configuration, secrets masked

Options:
  -c, --config PATH       Config file (default /etc/multihead/config.json, or $MULTIHEAD_CONFIG)
      --format FORMAT     For "config schema": json (default) or markdown
  -V, --version           Print the app and native addon versions
  -h, --help              Print this help

Exit codes: 0 ok, 64 usage error, 70 internal error, 78 invalid configuration.
`;
