import type { Config } from '../config/schema.ts';
import { CommandError } from '../supervisor/commands.ts';

/** How the play command opens its source, beyond the source itself. */
export interface PlayOptions {
  readonly hw?: Config['decode']['hardware'];
  readonly startSeconds?: number;
}

function bad(message: string): never {
  throw new CommandError('ERR_BAD_ARGUMENT', message);
}

/**
 * The outputs a command names (`"outputs"`), each one driven now, without repeats; every driven
 * output when it names none.
 */
export function outputsArg(value: unknown, command: string, driven: readonly string[]): string[] {
  if (value === undefined) return [...driven];
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) {
    bad(`${command}: "outputs" must be a non-empty list of output names`);
  }
  const unknown = value.filter((v) => !driven.includes(v));
  if (unknown.length > 0) {
    bad(`${command}: no output ${unknown.map((u) => `"${u}"`).join(', ')}; outputs: ${driven.join(', ') || 'none'}`);
  }
  return [...new Set(value as string[])];
}

/** The play command's `hw` and `startSeconds`. */
export function playOptions(args: Record<string, unknown>): PlayOptions {
  const { hw, startSeconds: start } = args;
  if (hw !== undefined && hw !== 'auto' && hw !== 'software') {
    bad(`play: "hw" must be "auto" or "software", got ${JSON.stringify(hw)}`);
  }
  if (start !== undefined && (typeof start !== 'number' || !(start >= 0))) {
    bad(`play: "startSeconds" must be a number >= 0, got ${JSON.stringify(start)}`);
  }
  return {
    ...(hw !== undefined ? { hw: hw as Config['decode']['hardware'] } : {}),
    ...(start !== undefined ? { startSeconds: start as number } : {}),
  };
}

/** `decode.shared`'s `on`. */
export function sharedArg(args: Record<string, unknown>): boolean {
  if (typeof args.on !== 'boolean') bad(`decode.shared needs "on": true or false, got ${JSON.stringify(args.on)}`);
  return args.on;
}

/** `decode.maxDecoders`'s `max`. */
export function maxDecodersArg(args: Record<string, unknown>): number {
  const max = args.max;
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 64) {
    bad(`decode.maxDecoders needs "max": an integer 1-64, got ${JSON.stringify(max)}`);
  }
  return max;
}
