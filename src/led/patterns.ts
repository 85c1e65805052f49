import type { Health } from '../status/health.ts';

/** What the status LED says, most urgent first in `ledStateOf`. */
export type LedState = 'booting' | 'playing' | 'degraded' | 'noBroker' | 'error' | 'identify' | 'off';

/**
 * One way to drive an LED through a kernel trigger, so the pattern keeps running even if the
 * supervisor's event loop stalls (the meaning must outlive the process that set it).
 * `brightness` is the LED's max_brightness, scaled in by `ledPatternFor`.
 */
export type LedPattern =
  | { readonly trigger: 'none'; readonly brightness: number }
  | { readonly trigger: 'timer'; readonly delayOnMs: number; readonly delayOffMs: number }
  | { readonly trigger: 'heartbeat' }
  /** ledtrig-pattern: "brightness duration" pairs; a 0 ms step jumps instead of fading. */
  | { readonly trigger: 'pattern'; readonly pattern: string };

const SLOW_BLINK = { trigger: 'timer', delayOnMs: 500, delayOffMs: 500 } as const;
const FAST_BLINK = { trigger: 'timer', delayOnMs: 100, delayOffMs: 100 } as const;

/**
 * The pattern for a state on an LED whose max_brightness is `max`. The first element is what the
 * issue asks for; the second replaces it when the kernel lacks that trigger (ledtrig-pattern and
 * ledtrig-heartbeat are modules some boards leave out) and stays distinguishable from the others.
 */
export function ledPatternFor(state: LedState, max: number): readonly [LedPattern, LedPattern?] {
  switch (state) {
    case 'booting':
      return [SLOW_BLINK];
    case 'playing':
      return [{ trigger: 'none', brightness: max }];
    case 'degraded':
      // Two short flashes, then a pause: on 120, off 120, on 120, off 640.
      return [
        { trigger: 'pattern', pattern: `${max} 120 ${max} 0 0 120 0 0 ${max} 120 ${max} 0 0 640 0 0` },
        { trigger: 'timer', delayOnMs: 200, delayOffMs: 800 },
      ];
    case 'noBroker':
      // A slow breathing fade (the pattern trigger interpolates between steps).
      return [
        { trigger: 'pattern', pattern: `0 1000 ${max} 1000` },
        { trigger: 'timer', delayOnMs: 1500, delayOffMs: 1500 },
      ];
    case 'error':
      return [FAST_BLINK];
    case 'identify':
      return [{ trigger: 'heartbeat' }, { trigger: 'timer', delayOnMs: 50, delayOffMs: 250 }];
    case 'off':
      return [{ trigger: 'none', brightness: 0 }];
  }
}

/** The LED state for a health judgement; identify overrides everything while it lasts. */
export function ledStateOf(health: Health, identifying: boolean): LedState {
  if (identifying) return 'identify';
  switch (health.state) {
    case 'booting':
      return 'booting';
    case 'error':
      return 'error';
    case 'degraded':
      return 'degraded';
    case 'ok':
      return health.broker === 'disconnected' ? 'noBroker' : 'playing';
  }
}
