import { CommandError } from '../supervisor/commands.ts';
import type { CecOutcome } from './cec.ts';
import type { Screens } from './screens.ts';

/** How long a power change waits for a flip in flight on the output to land. */
const BUSY_WAIT_MS = 1000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface DisplayPowerResult {
  /** DPMS, done on every output named here. */
  outputs: Record<string, 'on' | 'off'>;
  /** Outputs with a CEC adapter: the TV's power read back after the change, or the problem. */
  cec?: Record<string, CecOutcome>;
}

/**
 * `display.power {outputs?, on}`: each output's CRTC inactive (DPMS off: the monitor sleeps,
 * its last frame kept) or active again, and where the output has a CEC adapter the TV to
 * standby or awake. Unknown outputs are refused by name and nothing changes; virtual outputs
 * have no screen to power. A CEC problem does not fail the command: DPMS is done, `cec` says.
 */
export async function displayPowerCommand(
  screens: Pick<Screens, 'kind' | 'outputs' | 'power' | 'cecPower'> | undefined,
  args: Record<string, unknown>,
): Promise<DisplayPowerResult> {
  const unknownField = Object.keys(args).find((k) => k !== 'outputs' && k !== 'on');
  if (unknownField) throw new CommandError('ERR_BAD_ARGUMENT', `unknown field "${unknownField}" (known: outputs, on)`);
  if (typeof args.on !== 'boolean') throw new CommandError('ERR_BAD_ARGUMENT', '"on" must be true or false');
  const on = args.on;
  const power = screens?.power;
  if (!screens || !power) {
    throw new CommandError(
      'ERR_NOT_AVAILABLE',
      screens ? 'virtual outputs have no display to power' : 'the display is not ready',
    );
  }
  const driven = screens.outputs().map((o) => o.name);
  const asked = args.outputs;
  if (asked !== undefined && !(Array.isArray(asked) && asked.length > 0 && asked.every((o) => typeof o === 'string'))) {
    throw new CommandError('ERR_BAD_ARGUMENT', '"outputs" must be a list of output names');
  }
  const chosen = (asked as string[] | undefined) ?? driven;
  const unknown = chosen.filter((o) => !driven.includes(o));
  if (unknown.length > 0) {
    throw new CommandError(
      'ERR_BAD_ARGUMENT',
      `outputs: ${unknown.join(', ')} not driven (driven: ${driven.join(', ')})`,
    );
  }
  const result: Record<string, 'on' | 'off'> = {};
  const cec: Record<string, CecOutcome> = {};
  for (const output of chosen) {
    const outcome = await outputPowerSet(screens, output, on);
    result[output] = on ? 'on' : 'off';
    if (outcome) cec[output] = outcome;
  }
  return { outputs: result, ...(Object.keys(cec).length > 0 ? { cec } : {}) };
}

/**
 * One output's display power, waiting out a flip in flight (it lands within a frame); a
 * coded CommandError when DPMS cannot be done. Then, where the output has a CEC adapter, the
 * TV to standby or awake: its outcome is returned, never thrown. The one way content
 * schedules and the command change display power.
 */
export async function outputPowerSet(
  screens: Pick<Screens, 'power' | 'cecPower'>,
  output: string,
  on: boolean,
): Promise<CecOutcome | undefined> {
  await dpmsSet(screens, output, on);
  return screens.cecPower?.(output, on);
}

async function dpmsSet(screens: Pick<Screens, 'power'>, output: string, on: boolean): Promise<void> {
  const power = screens.power;
  if (!power) throw new CommandError('ERR_NOT_AVAILABLE', 'virtual outputs have no display to power');
  const deadline = Date.now() + BUSY_WAIT_MS;
  for (;;) {
    try {
      power.call(screens, output, on);
      return;
    } catch (error) {
      const busy = /ERR_KMS_BUSY/.test((error as Error).message);
      if (!busy || Date.now() > deadline) {
        throw new CommandError(
          busy ? 'ERR_KMS_BUSY' : 'ERR_KMS_COMMIT_REFUSED',
          `${output}: ${(error as Error).message}`,
        );
      }
      await sleep(5);
    }
  }
}
