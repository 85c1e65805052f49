import { performance } from 'node:perf_hooks';

/** One step of the start-up, in ms since the process started (performance's time origin). */
export interface StartupMark {
  readonly step: string;
  readonly atMs: number;
}

/**
 * Where the supervisor's start goes, from the process's start to the first frame on screen:
 * Node's own start (from `performance.nodeTiming`), then each step the supervisor marks. Said
 * once, in one log line, when the first frame shows (test/image prints it).
 */
export class StartupTimeline {
  readonly #marks: StartupMark[] = [];
  #done = false;

  constructor() {
    const node = performance.nodeTiming;
    // Node's bootstrap, then its loading of the supervisor's modules until main runs.
    this.#marks.push({ step: 'node', atMs: node.bootstrapComplete });
    this.#marks.push({ step: 'modules', atMs: performance.now() });
  }

  mark(step: string): void {
    if (!this.#done) this.#marks.push({ step, atMs: performance.now() });
  }

  /** The last mark, the timeline closed: the steps with each one's own duration. */
  finish(step: string): { totalMs: number; steps: Array<{ step: string; ms: number }> } | undefined {
    if (this.#done) return undefined;
    this.mark(step);
    this.#done = true;
    return {
      totalMs: Math.round(this.#marks.at(-1)?.atMs ?? 0),
      steps: this.#marks.map((m, i) => ({ step: m.step, ms: Math.round(m.atMs - (this.#marks[i - 1]?.atMs ?? 0)) })),
    };
  }
}

/** `node 310 ms, modules 420 ms, ...` */
export function startupSummary(steps: ReadonlyArray<{ step: string; ms: number }>): string {
  return steps.map((s) => `${s.step} ${s.ms} ms`).join(', ');
}
