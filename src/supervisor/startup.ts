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
  /** Marks before this index were reported with the first frame. */
  #reported = 0;

  constructor() {
    const node = performance.nodeTiming;
    // Node's bootstrap, then its loading of the supervisor's modules until main runs.
    this.#marks.push({ step: 'node', atMs: node.bootstrapComplete });
    this.#marks.push({ step: 'modules', atMs: performance.now() });
  }

  mark(step: string): void {
    this.#marks.push({ step, atMs: performance.now() });
  }

  /** The first frame: the steps until now, each with its own duration; once. */
  finish(step: string): { totalMs: number; steps: Array<{ step: string; ms: number }> } | undefined {
    if (this.#done) return undefined;
    this.mark(step);
    this.#done = true;
    this.#reported = this.#marks.length;
    return this.#steps(0);
  }

  /**
   * The steps marked after the first frame (the extensions that waited for it), once every
   * extension runs; undefined before the first frame (its line will list them) or when none.
   */
  rest(): { totalMs: number; steps: Array<{ step: string; ms: number }> } | undefined {
    if (!this.#done || this.#reported >= this.#marks.length) return undefined;
    const from = this.#reported;
    this.#reported = this.#marks.length;
    return this.#steps(from);
  }

  #steps(from: number): { totalMs: number; steps: Array<{ step: string; ms: number }> } {
    const marks = this.#marks;
    return {
      totalMs: Math.round(marks.at(-1)?.atMs ?? 0),
      steps: marks
        .slice(from)
        .map((m, i) => ({ step: m.step, ms: Math.round(m.atMs - (marks[from + i - 1]?.atMs ?? 0)) })),
    };
  }
}

/** `node 310 ms, modules 420 ms, ...` */
export function startupSummary(steps: ReadonlyArray<{ step: string; ms: number }>): string {
  return steps.map((s) => `${s.step} ${s.ms} ms`).join(', ');
}
