import { parseArgs } from 'node:util';
import { schemaJson, schemaMarkdown } from '../config/describe.ts';
import { ConfigError, configLoad } from '../config/load.ts';
import { ExitCode } from '../exit-codes.ts';
import { LEVEL_ORDER } from '../log/ring.ts';
import { loadAddon } from '../native/addon.ts';
import { appVersion } from '../version.ts';
import { logsShow, outputsShow, statusShow } from './box-commands.ts';
import { diagnoseRun } from './diagnose.ts';
import { EndpointError, endpointClient, endpointUrl } from './endpoint-client.ts';
import { supervisorRun } from './run.ts';
import { USAGE } from './usage.ts';

class UsageError extends Error {}

interface Options {
  config?: string | undefined;
  format?: string | undefined;
  version?: boolean | undefined;
  help?: boolean | undefined;
  url?: string | undefined;
  json?: boolean | undefined;
  follow?: boolean | undefined;
  level?: string | undefined;
  lines?: string | undefined;
}

/** Commands that ask the running supervisor through its local status endpoint. */
const ENDPOINT_COMMANDS = ['status', 'outputs', 'logs'];

function parse(argv: string[]): { command: string[]; options: Options } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        format: { type: 'string' },
        version: { type: 'boolean', short: 'V' },
        help: { type: 'boolean', short: 'h' },
        url: { type: 'string' },
        json: { type: 'boolean' },
        follow: { type: 'boolean', short: 'f' },
        level: { type: 'string' },
        lines: { type: 'string' },
      },
    });
    return { command: positionals, options: values };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function configFail(error: unknown): number {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`multihead: ${error.message}\n`);
  return ExitCode.config;
}

async function main(argv: string[]): Promise<number> {
  const { command, options } = parse(argv);
  if (options.help) {
    process.stdout.write(USAGE);
    return ExitCode.ok;
  }
  if (options.version) {
    const addon = loadAddon();
    process.stdout.write(`multihead ${appVersion} (native addon ${addon.version()}, Node.js ${process.version})\n`);
    return ExitCode.ok;
  }
  if (options.format !== undefined && command.join(' ') !== 'config schema') {
    throw new UsageError('--format only applies to "config schema"');
  }
  const [verb = 'run', ...rest] = command;
  const endpointCommand = ENDPOINT_COMMANDS.includes(verb) && rest.length === 0;
  const diagnoseCommand = verb === 'diagnose' && rest.length <= 1;
  if (!endpointCommand && options.url !== undefined) {
    throw new UsageError('--url only applies to "status", "outputs" and "logs"');
  }
  if (!endpointCommand && !diagnoseCommand && options.json !== undefined) {
    throw new UsageError('--json only applies to "status", "outputs", "logs" and "diagnose"');
  }
  if (verb !== 'logs' && (options.follow !== undefined || options.level !== undefined || options.lines !== undefined)) {
    throw new UsageError('--follow, --level and --lines only apply to "logs"');
  }
  if (endpointCommand) return endpointAsk(verb, options);
  if (diagnoseCommand) {
    return diagnoseRun(loadAddon(), options.json === true, (text) => process.stdout.write(text), rest[0]);
  }
  if (verb === 'run' && rest.length === 0) return supervisorRun({ configPath: options.config });
  if (verb !== 'config') throw new UsageError(`unknown command "${command.join(' ')}"`);

  const [sub, ...args] = rest;
  if (sub === 'check' && args.length === 1 && options.config === undefined) {
    const file = args[0] as string;
    try {
      configLoad({ path: file, useEnv: false });
    } catch (error) {
      return configFail(error);
    }
    process.stdout.write(`${file}: ok\n`);
    return ExitCode.ok;
  }
  if (sub === 'schema' && args.length === 0 && options.config === undefined) {
    const format = options.format ?? 'json';
    if (format !== 'json' && format !== 'markdown')
      throw new UsageError(`--format must be json or markdown, not "${format}"`);
    process.stdout.write(format === 'json' ? schemaJson() : schemaMarkdown());
    return ExitCode.ok;
  }
  if (sub === 'show' && args.length === 0) {
    try {
      const loaded = configLoad({ path: options.config });
      process.stdout.write(`${JSON.stringify(loaded.masked(), null, 2)}\n`);
    } catch (error) {
      return configFail(error);
    }
    return ExitCode.ok;
  }
  throw new UsageError(`unknown command "${command.join(' ')}"`);
}

async function endpointAsk(verb: string, options: Options): Promise<number> {
  if (options.level !== undefined && (!(options.level in LEVEL_ORDER) || options.level === 'silent')) {
    throw new UsageError(`--level must be one of ${Object.keys(LEVEL_ORDER).join(', ')}, not "${options.level}"`);
  }
  let lines: number | undefined;
  if (options.lines !== undefined) {
    lines = /^\d{1,4}$/.test(options.lines) ? Number(options.lines) : Number.NaN;
    if (!(lines >= 1 && lines <= 1000)) {
      throw new UsageError(`--lines must be an integer from 1 to 1000, not "${options.lines}"`);
    }
  }
  let config: ReturnType<typeof configLoad>['config'];
  try {
    config = configLoad({ path: options.config }).config;
  } catch (error) {
    return configFail(error);
  }
  let base: URL;
  try {
    base = endpointUrl(config, options.url);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const client = endpointClient(base, config.http.token);
  const write = (text: string): void => {
    process.stdout.write(text);
  };
  const json = options.json === true;
  try {
    if (verb === 'status') await statusShow(client, json, write);
    else if (verb === 'outputs') await outputsShow(client, json, write);
    else {
      const abort = new AbortController();
      process.once('SIGINT', () => abort.abort());
      process.once('SIGTERM', () => abort.abort());
      await logsShow(
        client,
        { json, follow: options.follow === true, level: options.level, lines, signal: abort.signal },
        write,
      );
    }
  } catch (error) {
    if (!(error instanceof EndpointError)) throw error;
    process.stderr.write(`multihead: ${error.message}\n`);
    return ExitCode.unavailable;
  }
  return ExitCode.ok;
}

main(process.argv.slice(2)).then(
  (code) => {
    // The supervisor sets its own exit code when it stops; other commands end here.
    if (code !== undefined) process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`multihead: ${error.message}\n\n${USAGE}`);
      process.exitCode = ExitCode.usage;
      return;
    }
    process.stderr.write(`multihead: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = ExitCode.software;
  },
);
