import type { Config } from '../config/schema.ts';
import type { Screens } from '../display/screens.ts';
import type { Logger } from '../log/logger.ts';
import type { DecodeManager } from '../native/addon.ts';
import type { EventBus } from '../supervisor/bus.ts';
import { releaseQuietly } from './first-picture.ts';

/**
 * Drawn by the addon (native/src/decode/pattern.rs): a moving test card that needs no file, no
 * network and no FFmpeg filter library, made at the output's size, since many planes (vkms,
 * virtio-gpu, older Intel primaries) cannot scale. Outputs of the same size share one decoder.
 */
export function demoSource(width: number, height: number): string {
  return `pattern:testcard?size=${width}x${height}&rate=30`;
}
/** The demo on the default virtual outputs (1280x720). */
export const DEMO_SOURCE = demoSource(1280, 720);

export interface DemoDeps {
  readonly decode: DecodeManager;
  readonly logger: Logger;
  readonly bus: Pick<EventBus, 'emit'>;
  /** Off: outputs nobody claims keep their slate. */
  readonly enabled: boolean;
  readonly hw: Config['decode']['hardware'];
}

/**
 * The built-in demo on every output nobody has claimed (content, the play command). Each output
 * is a consumer named after itself, so outputs of one size share one decoder.
 */
export class Demo {
  readonly #deps: DemoDeps;
  /** Outputs the demo plays on. */
  readonly #on = new Set<string>();
  readonly #claimed = new Set<string>();

  constructor(deps: DemoDeps) {
    this.#deps = deps;
  }

  /** The outputs are someone else's now: the demo lets go of them and stays off them. */
  claim(outputs: readonly string[]): void {
    for (const output of outputs) {
      this.#claimed.add(output);
      if (!this.#on.delete(output)) continue;
      releaseQuietly(this.#deps.decode, output);
    }
  }

  /** The outputs may get the demo again (on the next `fill`). */
  unclaim(outputs: readonly string[]): void {
    for (const o of outputs) this.#claimed.delete(o);
  }

  /** Starts the demo on each output that is neither claimed nor already showing it. */
  fill(screens: Screens | undefined): void {
    if (!screens || !this.#deps.enabled) return;
    const outputs = screens.outputs().filter((o) => !this.#claimed.has(o.name) && !this.#on.has(o.name));
    if (outputs.length === 0) return;
    const started = outputs.filter((o) => this.#start(screens, o.name, demoSource(o.width, o.height)));
    if (started.length === 0) return;
    const names = started.map((o) => o.name);
    this.#deps.logger.info(
      { outputs: names, kind: screens.kind },
      `playing the built-in demo on ${names.join(', ')} (${screens.kind} outputs, one shared decoder per output size)`,
    );
  }

  #start(screens: Screens, output: string, source: string): boolean {
    const { decode, logger, bus, hw } = this.#deps;
    try {
      // Prerolled like every other switch: the addon returns with the first frame decoded (a
      // local generator: milliseconds), so the output is never given a source without a picture.
      decode.acquire(output, { source, hw, preroll: true });
      screens.play(decode, output, [{ output }]);
    } catch (error) {
      // This output keeps its slate; the others still get the demo.
      releaseQuietly(decode, output);
      logger.error(
        { output, source, err: error },
        `output ${output}: cannot play the built-in demo: ${(error as Error).message}`,
      );
      return false;
    }
    this.#on.add(output);
    bus.emit('playback.changed', { output, source, reason: 'built-in demo' });
    return true;
  }
}
