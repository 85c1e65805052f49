/**
 * Interrupts: an announcement or emergency shown over the schedule on chosen outputs, until
 * it expires or is cleared. Pure rules here (what a request means, which interrupt an output
 * shows); persistence and the screens are the content extension's.
 */

/** One interrupt as kept on disk and reported. */
export interface Interrupt {
  /** `int-<n>`, or the caller's own id. */
  readonly id: string;
  /** A media id of the content (played from the cache) ... */
  readonly media?: string;
  /** ... or a message drawn on a still, in `colour` (RRGGBB, default dark red). */
  readonly text?: string;
  readonly colour?: string;
  /** The outputs it covers; absent: every output the box drives. */
  readonly outputs?: readonly string[];
  /** Higher covers lower; -1000..1000, default 0. */
  readonly priority: number;
  readonly startedAt: number;
  /** Epoch ms when it ends by itself; null: until `interrupt.clear`. */
  readonly until: number | null;
}

/** What the file under the data directory holds. */
export interface InterruptFile {
  readonly interrupts: readonly Interrupt[];
}

export const INTERRUPT_FILE = 'interrupts.json';
/** At most this many at once (each a decoder while on screen). */
export const INTERRUPTS_MAX = 16;
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const OUTPUT = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
/** Longer than any sensible announcement; a typo of minutes as seconds still expires. */
const DURATION_MAX_S = 7 * 24 * 3600;
const TEXT_MAX = 200;

/** A request that cannot be an interrupt: the field and why. */
export class InterruptError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const bad = (message: string): InterruptError => new InterruptError('ERR_BAD_ARGUMENT', message);

/**
 * The interrupt an `interrupt` command asks for, at `now`: media (known to `mediaKnown`) or
 * text, outputs, priority, and an end (`durationS` or `until`, an ISO time) or none.
 */
export function interruptFromArgs(
  args: Record<string, unknown>,
  now: number,
  mediaKnown: (id: string) => boolean,
  nextId: () => string,
): Interrupt {
  const allowed = ['id', 'media', 'text', 'colour', 'outputs', 'priority', 'durationS', 'until'];
  const unknown = Object.keys(args).find((k) => !allowed.includes(k));
  if (unknown) throw bad(`unknown field "${unknown}" (known: ${allowed.join(', ')})`);
  const { id, media, text, colour, outputs, priority, durationS, until } = args;
  if (id !== undefined && !(typeof id === 'string' && ID.test(id))) {
    throw bad('id must be 1-64 letters, digits, ".", "_" or "-"');
  }
  if ((media === undefined) === (text === undefined))
    throw bad('give either "media" (a media id) or "text", not both or neither');
  if (media !== undefined) {
    if (typeof media !== 'string' || !mediaKnown(media)) {
      throw new InterruptError('ERR_MEDIA_UNKNOWN', `media ${JSON.stringify(media)} is not in the content's media`);
    }
  }
  if (text !== undefined && !(typeof text === 'string' && text.trim().length > 0 && text.length <= TEXT_MAX)) {
    throw bad(`text must be 1-${TEXT_MAX} characters`);
  }
  if (colour !== undefined && !(typeof colour === 'string' && /^[0-9a-fA-F]{6}$/.test(colour))) {
    throw bad('colour must be RRGGBB');
  }
  if (
    outputs !== undefined &&
    !(
      Array.isArray(outputs) &&
      outputs.length > 0 &&
      outputs.length <= 16 &&
      outputs.every((o) => typeof o === 'string' && OUTPUT.test(o))
    )
  ) {
    throw bad('outputs must be a list of 1-16 connector names such as "HDMI-A-1"');
  }
  if (priority !== undefined && !(Number.isInteger(priority) && Math.abs(priority as number) <= 1000)) {
    throw bad('priority must be an integer from -1000 to 1000');
  }
  if (durationS !== undefined && until !== undefined) throw bad('give "durationS" or "until", not both');
  let end: number | null = null;
  if (durationS !== undefined) {
    if (
      !(typeof durationS === 'number' && Number.isFinite(durationS) && durationS > 0 && durationS <= DURATION_MAX_S)
    ) {
      throw bad(`durationS must be a number of seconds from 0 to ${DURATION_MAX_S}`);
    }
    end = now + Math.round(durationS * 1000);
  }
  if (until !== undefined) {
    const at = typeof until === 'string' && /^\d{4}-\d\d-\d\dT/.test(until) ? Date.parse(until) : Number.NaN;
    if (Number.isNaN(at)) throw bad('until must be an ISO time such as 2026-12-03T18:00:00Z');
    if (at <= now) throw bad(`until ${until} has passed`);
    if (at - now > DURATION_MAX_S * 1000) throw bad('until is more than 7 days ahead');
    end = at;
  }
  return {
    id: (id as string | undefined) ?? nextId(),
    ...(media !== undefined ? { media: media as string } : {}),
    ...(text !== undefined ? { text: (text as string).trim() } : {}),
    ...(colour !== undefined ? { colour: (colour as string).toLowerCase() } : {}),
    ...(outputs !== undefined ? { outputs: [...new Set(outputs as string[])] } : {}),
    priority: (priority as number | undefined) ?? 0,
    startedAt: now,
    until: end,
  };
}

/** Those not ended at `now`. */
export function interruptsLive(list: readonly Interrupt[], now: number): Interrupt[] {
  return list.filter((i) => i.until === null || i.until > now);
}

/** Whether `i` covers `output`. */
export function interruptCovers(i: Interrupt, output: string): boolean {
  return i.outputs === undefined || i.outputs.includes(output);
}

/** The interrupt `output` shows: the highest priority, the newest among equals; none. */
export function interruptOn(list: readonly Interrupt[], output: string): Interrupt | undefined {
  let best: Interrupt | undefined;
  for (const i of list) {
    if (!interruptCovers(i, output)) continue;
    if (!best || i.priority > best.priority || (i.priority === best.priority && i.startedAt >= best.startedAt))
      best = i;
  }
  return best;
}

/**
 * Adds `next` to the live list. Refused when a live interrupt of higher priority covers one of
 * its outputs (the caller must clear it first); one with the same id is replaced.
 */
export function interruptAdd(list: readonly Interrupt[], next: Interrupt, driven: readonly string[]): Interrupt[] {
  const others = list.filter((i) => i.id !== next.id);
  const wanted = next.outputs ?? driven;
  const higher = others.find((i) => i.priority > next.priority && wanted.some((o) => interruptCovers(i, o)));
  if (higher) {
    throw new InterruptError(
      'ERR_INTERRUPT_PRIORITY',
      `interrupt ${higher.id} (priority ${higher.priority}) covers ${wanted.filter((o) => interruptCovers(higher, o)).join(', ')}; clear it or give a priority above ${higher.priority}`,
    );
  }
  if (others.length >= INTERRUPTS_MAX) {
    throw new InterruptError('ERR_INTERRUPT_LIMIT', `${INTERRUPTS_MAX} interrupts are live; clear one first`);
  }
  return [...others, next];
}

/** The file's interrupts, or none when it is missing or unreadable (a torn file is not trusted). */
export function interruptFileParse(text: string): Interrupt[] {
  const data = JSON.parse(text) as Partial<InterruptFile>;
  if (!Array.isArray(data.interrupts)) throw new Error('no "interrupts" list');
  return data.interrupts.filter(
    (i): i is Interrupt =>
      typeof i === 'object' &&
      i !== null &&
      typeof i.id === 'string' &&
      typeof i.priority === 'number' &&
      typeof i.startedAt === 'number' &&
      (i.until === null || typeof i.until === 'number') &&
      (typeof i.media === 'string' || typeof i.text === 'string'),
  );
}
