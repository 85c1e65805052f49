import { parseArgs } from 'node:util';
import { schemaJson, schemaMarkdown } from '../config/describe.ts';
import { ConfigError, configLoad } from '../config/load.ts';
import { ExitCode } from '../exit-codes.ts';
import { loadAddon } from '../native/addon.ts';
import { appVersion } from '../version.ts';
import { supervisorRun } from './run.ts';
import { USAGE } from './usage.ts';

class UsageError extends Error {}

interface Options {
  config?: string | undefined;
  format?: string | undefined;
  version?: boolean | undefined;
  help?: boolean | undefined;
}

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
