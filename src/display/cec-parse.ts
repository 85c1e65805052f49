// What `cec-ctl` (v4l-utils) prints, read into facts, and which adapter belongs to which output.
// No I/O here: cec.ts runs the tool, these functions are what the unit tests pin down with
// output captured from cec-ctl 1.22 on the kernel's vivid adapters.

/** A TV's power as it reports it (CEC Report Power Status). */
export type TvPower = 'on' | 'standby' | 'to-on' | 'to-standby';

/** An output's display power in status: DPMS, and the TV's own word where CEC reaches it. */
export type PowerShown = 'on' | 'off' | 'standby' | 'unknown';

/** A coded CEC problem; the code is stable, the message names what happened. */
export interface CecProblem {
  code: string;
  message: string;
}

export interface CecInfo {
  adapterName: string;
  /** `f.f.f.f` while the HDMI link carries no address (nothing plugged, or the sink's EDID unread). */
  physicalAddress: string;
  /** The logical address claimed, if any. */
  logicalAddress?: number;
  /** The DRM connector the adapter is wired to, when its driver says (Connector Info: DRM). */
  drm?: { card: number; connectorId: number };
}

const field = (text: string, name: string): string | undefined =>
  new RegExp(`^\\s*${name}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();

/** `cec-ctl -d /dev/cecN` (the adapter's "Driver Info" block). */
export function cecInfoParse(text: string): CecInfo {
  const info: CecInfo = {
    adapterName: field(text, 'Adapter Name') ?? '',
    physicalAddress: field(text, 'Physical Address') ?? 'f.f.f.f',
  };
  const la = /^\s*Logical Address\s*:\s*(\d+)\b/m.exec(text);
  if (la) info.logicalAddress = Number(la[1]);
  if (/^\s*Connector Info\s*:\s*DRM\b/m.test(text)) {
    const card = /Card No\s*:\s*(\d+)/.exec(text);
    const id = /Connector ID\s*:\s*(\d+)/.exec(text);
    if (card && id) info.drm = { card: Number(card[1]), connectorId: Number(id[1]) };
  }
  return info;
}

/**
 * A transmit's outcome from cec-ctl's report: undefined when it went out and was acknowledged.
 * cec-ctl prints "Tx, OK" (or nothing after the sequence line for a message that needs no
 * reply), else "Tx, Not Acknowledged (4), Max Retries", "Tx, Aborted, ...", "Rx, Timeout", or
 * a Feature Abort from the TV; it exits 0 either way, so this is where failures are seen.
 */
export function cecTxProblem(text: string, what: string): CecProblem | undefined {
  const status = /^\s*Tx, (.*)$/m.exec(text)?.[1]?.trim();
  if (status === undefined) {
    if (/^Transmit from /m.test(text)) return undefined;
    return { code: 'ERR_CEC_NO_TRANSMIT', message: `${what}: cec-ctl printed no transmit (${firstLine(text)})` };
  }
  if (/Not Acknowledged/.test(status)) {
    return { code: 'ERR_CEC_NO_ACK', message: `${what}: the TV did not acknowledge (${status})` };
  }
  if (/Feature Abort/.test(status)) {
    const reason = /^\s*reason:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? 'no reason given';
    return { code: 'ERR_CEC_REFUSED', message: `${what}: the TV refused it (${reason})` };
  }
  if (/Rx, Timeout/.test(status)) return { code: 'ERR_CEC_NO_REPLY', message: `${what}: the TV did not reply` };
  if (/^OK\b/.test(status)) return undefined;
  return { code: 'ERR_CEC_TX', message: `${what}: ${status}` };
}

/** `cec-ctl -s -t 0 --give-device-power-status`: the TV's Report Power Status, or why none. */
export function tvPowerParse(text: string): { power: TvPower } | { problem: CecProblem } {
  const problem = cecTxProblem(text, 'Give Device Power Status');
  if (problem) return { problem };
  const state = /^\s*pwr-state:\s*(on|standby|to-on|to-standby)\b/m.exec(text)?.[1];
  if (state === undefined) {
    return {
      problem: { code: 'ERR_CEC_NO_REPLY', message: 'Give Device Power Status: no Report Power Status came back' },
    };
  }
  return { power: state as TvPower };
}

const firstLine = (text: string): string => text.trim().split('\n')[0]?.slice(0, 200) ?? '';

/** What status shows for an output: DPMS first; where CEC reaches the TV, its own report. */
export function powerShown(dpmsOn: boolean, tv: TvPower | undefined, cec: boolean): PowerShown {
  if (tv === 'standby' || tv === 'to-standby') return 'standby';
  if (!dpmsOn) return 'off';
  // The link is lit; with CEC in use and no answer from the TV, nobody knows if it shows.
  if (cec && tv === undefined) return 'unknown';
  return 'on';
}

export interface CecCandidate {
  path: string;
  info: CecInfo;
}

export interface CecOutputWanted {
  output: string;
  /** `outputs[].cec`: "auto", "off" or a /dev/cecN path. */
  setting: string;
  card: number;
  connectorId: number;
}

/**
 * Which adapter reaches which output's TV. An explicit path wins; "auto" takes the adapter
 * whose connector info names this very DRM connector, else (no adapter says where it is wired,
 * as with USB adapters or vivid) the one adapter left when exactly one "auto" output is left to
 * take it: with more, guessing would put the wrong TV to sleep.
 */
export function cecAssign(
  wanted: readonly CecOutputWanted[],
  adapters: readonly CecCandidate[],
): { assigned: Map<string, string>; notes: string[] } {
  const assigned = new Map<string, string>();
  const notes: string[] = [];
  const taken = new Set<string>();
  for (const w of wanted) {
    if (!w.setting.startsWith('/dev/')) continue;
    if (adapters.some((a) => a.path === w.setting)) {
      assigned.set(w.output, w.setting);
      taken.add(w.setting);
    } else {
      notes.push(`${w.output}: outputs[].cec names ${w.setting}, which does not exist`);
    }
  }
  const auto = wanted.filter((w) => w.setting === 'auto');
  const unmatched: CecOutputWanted[] = [];
  for (const w of auto) {
    const wired = adapters.find(
      (a) => !taken.has(a.path) && a.info.drm?.card === w.card && a.info.drm.connectorId === w.connectorId,
    );
    if (wired) {
      assigned.set(w.output, wired.path);
      taken.add(wired.path);
    } else {
      unmatched.push(w);
    }
  }
  const loose = adapters.filter((a) => !taken.has(a.path) && a.info.drm === undefined);
  if (unmatched.length === 1 && loose.length === 1) {
    assigned.set((unmatched[0] as CecOutputWanted).output, (loose[0] as CecCandidate).path);
  } else if (unmatched.length > 0 && loose.length > 0) {
    notes.push(
      `${unmatched.map((w) => w.output).join(', ')}: no CEC adapter names their connector and ${loose.length} adapter(s) (${loose.map((a) => a.path).join(', ')}) could be any; set outputs[].cec`,
    );
  }
  return { assigned, notes };
}
