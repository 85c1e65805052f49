// HDMI-CEC for display power: the TV behind an output goes to standby with DPMS off and wakes
// with DPMS on. The kernel's CEC framework (/dev/cecN) is driven through Debian's `cec-ctl`
// (v4l-utils) as a child process rather than through our own ioctls: cec-ctl is the framework's
// reference client, it knows every message's layout and the adapter's configuration dance
// (logical address claim, physical address from the EDID), and a tool that hangs or crashes
// is a timed-out child, never the supervisor (docs/kms.md, "HDMI-CEC").
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import type { Logger } from '../log/logger.ts';
import {
  type CecCandidate,
  type CecInfo,
  type CecOutputWanted,
  type CecProblem,
  cecAssign,
  cecInfoParse,
  cecTxProblem,
  type TvPower,
  tvPowerParse,
} from './cec-parse.ts';

/** One cec-ctl run; a transmit waits for its acknowledgement and at most one reply (1 s in CEC). */
const CEC_CTL_TIMEOUT_MS = 10000;
/** The name the TV shows for this box in its source list. */
const OSD_NAME = 'multihead';
/** Logical address 0 is always the TV; 15 is broadcast. */
const TV = '0';
const BROADCAST = '15';
/**
 * TVs take seconds to sleep or wake and meanwhile report the old state or a transition: the
 * read-back asks again until the TV says where it went, for at most this long.
 */
const TV_SETTLE_MS = 10000;
const TV_ASK_AGAIN_MS = 500;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class CecError extends Error {
  readonly code: string;
  constructor(problem: CecProblem) {
    super(problem.message);
    this.code = problem.code;
  }
}

/** Runs cec-ctl with an argument list (no shell); its stdout, or a coded CecError. */
export type CecRunner = (args: readonly string[]) => Promise<string>;

export const cecCtl: CecRunner = (args) =>
  new Promise((resolve, reject) => {
    execFile('cec-ctl', [...args], { timeout: CEC_CTL_TIMEOUT_MS, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const e = error as NodeJS.ErrnoException & { killed?: boolean };
      const device = args[args.indexOf('-d') + 1] ?? 'the adapter';
      if (e.code === 'ENOENT') {
        reject(
          new CecError({ code: 'ERR_CEC_NO_TOOL', message: 'cec-ctl is not installed (Debian package v4l-utils)' }),
        );
      } else if (e.killed) {
        reject(
          new CecError({
            code: 'ERR_CEC_TIMEOUT',
            message: `cec-ctl on ${device} gave no answer in ${CEC_CTL_TIMEOUT_MS} ms`,
          }),
        );
      } else {
        const why = stderr.trim().split('\n')[0] || `exit status ${String(e.code)}`;
        reject(new CecError({ code: 'ERR_CEC_ADAPTER', message: `cec-ctl on ${device}: ${why}` }));
      }
    });
  });

/** One kernel CEC adapter, configured as a Playback device. */
export class CecAdapter {
  readonly path: string;
  #run: CecRunner;
  #info: CecInfo | undefined;

  constructor(path: string, run: CecRunner = cecCtl) {
    this.path = path;
    this.#run = run;
  }

  async info(): Promise<CecInfo> {
    this.#info = cecInfoParse(await this.#run(['-d', this.path]));
    return this.#info;
  }

  /** Claims a Playback logical address (kept by the kernel until reconfigured) under our name. */
  async configure(): Promise<CecInfo> {
    this.#info = cecInfoParse(await this.#run(['-d', this.path, '--playback', '-o', OSD_NAME]));
    return this.#info;
  }

  async standby(): Promise<void> {
    await this.#send([TV, '--standby'], 'Standby');
  }

  /** Image View On takes the TV out of standby; Active Source makes it show our input. */
  async wake(): Promise<void> {
    await this.#send([TV, '--image-view-on'], 'Image View On');
    const address = this.#info?.physicalAddress ?? (await this.info()).physicalAddress;
    await this.#send([BROADCAST, '--active-source', `phys-addr=${address}`], 'Active Source');
  }

  async tvPower(): Promise<TvPower> {
    const read = tvPowerParse(await this.#run(['-d', this.path, '-s', '-t', TV, '--give-device-power-status']));
    if ('problem' in read) throw new CecError(read.problem);
    return read.power;
  }

  async #send(args: string[], what: string): Promise<void> {
    const problem = cecTxProblem(await this.#run(['-d', this.path, '-s', '-t', ...args]), what);
    if (problem) throw new CecError(problem);
  }
}

/** An output's CEC facts for status: its adapter, the TV's power as read back, the last error. */
export interface CecState {
  adapter: string;
  tv: TvPower | 'unknown';
  error?: string;
}

/** What one power change did over CEC (undefined where the output has no adapter). */
export type CecOutcome = { tv: TvPower | 'unknown'; error?: string };

export interface CecOutputsDeps {
  logger: Logger;
  /** Said whenever an output's CEC state changes (status reads `state`). */
  onChange: () => void;
  run?: CecRunner;
  /** Where adapters are looked for; /dev. */
  devDir?: string;
}

/** The adapters of the driven outputs: set up once, then power changes and read-backs. */
export class CecOutputs {
  readonly #deps: CecOutputsDeps;
  readonly #adapters = new Map<string, CecAdapter>();
  readonly #state = new Map<string, CecState>();
  #ready: Promise<void> = Promise.resolve();

  constructor(deps: CecOutputsDeps) {
    this.#deps = deps;
  }

  /** Finds, assigns and configures the adapters; power changes wait for it. */
  setup(wanted: readonly CecOutputWanted[]): Promise<void> {
    this.#ready = this.#setup(wanted).catch((error) => {
      this.#deps.logger.warn({ err: error }, `HDMI-CEC not set up: ${(error as Error).message}`);
    });
    return this.#ready;
  }

  state(output: string): CecState | undefined {
    const s = this.#state.get(output);
    return s ? { ...s } : undefined;
  }

  /**
   * The TV behind the output to standby (off) or awake and showing us (on), then its power
   * read back. Never throws: a CEC failure is the outcome's error, DPMS has been done already.
   */
  async power(output: string, on: boolean): Promise<CecOutcome | undefined> {
    await this.#ready;
    const adapter = this.#adapters.get(output);
    if (!adapter) return undefined;
    const { logger } = this.#deps;
    try {
      if (on) await adapter.wake();
      else await adapter.standby();
    } catch (error) {
      const message = `${on ? 'wake' : 'standby'}: ${(error as Error).message}`;
      logger.warn(
        { connector: output, adapter: adapter.path, code: (error as CecError).code },
        `output ${output}: CEC ${message}`,
      );
      this.#set(output, { adapter: adapter.path, tv: 'unknown', error: message });
      return { tv: 'unknown', error: message };
    }
    logger.info(
      { connector: output, adapter: adapter.path },
      `output ${output}: CEC ${on ? 'Image View On + Active Source' : 'Standby'} sent on ${adapter.path}`,
    );
    return this.#readBack(output, adapter, on ? 'on' : 'standby');
  }

  async #readBack(output: string, adapter: CecAdapter, want?: TvPower): Promise<CecOutcome> {
    try {
      const deadline = Date.now() + TV_SETTLE_MS;
      let tv = await adapter.tvPower();
      while (want !== undefined && tv !== want && Date.now() < deadline) {
        await sleep(TV_ASK_AGAIN_MS);
        tv = await adapter.tvPower();
      }
      this.#set(output, { adapter: adapter.path, tv });
      return { tv };
    } catch (error) {
      const message = `power status: ${(error as Error).message}`;
      this.#deps.logger.warn(
        { connector: output, adapter: adapter.path, code: (error as CecError).code },
        `output ${output}: CEC ${message}`,
      );
      this.#set(output, { adapter: adapter.path, tv: 'unknown', error: message });
      return { tv: 'unknown', error: message };
    }
  }

  #set(output: string, state: CecState): void {
    this.#state.set(output, state);
    this.#deps.onChange();
  }

  async #setup(wanted: readonly CecOutputWanted[]): Promise<void> {
    const { logger } = this.#deps;
    const paths = await cecNodes(this.#deps.devDir ?? '/dev');
    if (paths.length === 0 || wanted.every((w) => w.setting === 'off')) return;
    const candidates: CecCandidate[] = [];
    for (const path of paths) {
      const adapter = new CecAdapter(path, this.#deps.run);
      try {
        candidates.push({ path, info: await adapter.info() });
      } catch (error) {
        logger.warn({ adapter: path, code: (error as CecError).code }, `${path}: ${(error as Error).message}`);
      }
    }
    const { assigned, notes } = cecAssign(wanted, candidates);
    for (const note of notes) logger.warn(`HDMI-CEC: ${note}`);
    for (const [output, path] of assigned) {
      const adapter = new CecAdapter(path, this.#deps.run);
      this.#adapters.set(output, adapter);
      try {
        const info = await adapter.configure();
        logger.info(
          {
            connector: output,
            adapter: path,
            physicalAddress: info.physicalAddress,
            logicalAddress: info.logicalAddress,
          },
          `output ${output}: HDMI-CEC on ${path} (${info.adapterName}), playback device at ${info.physicalAddress}`,
        );
      } catch (error) {
        const message = `configure: ${(error as Error).message}`;
        logger.warn(
          { connector: output, adapter: path, code: (error as CecError).code },
          `output ${output}: CEC ${message}`,
        );
        this.#set(output, { adapter: path, tv: 'unknown', error: message });
        continue;
      }
      await this.#readBack(output, adapter);
    }
  }
}

/** The kernel CEC adapters present (/dev/cec0, /dev/cec1, ...), in number order. */
export async function cecNodes(devDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(devDir);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^cec\d+$/.test(n))
    .sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)))
    .map((n) => `${devDir}/${n}`);
}
