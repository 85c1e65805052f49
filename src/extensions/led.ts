import { type LedState, ledPatternFor, ledStateOf } from '../led/patterns.ts';
import { type LedFiles, realLedFiles, SysfsLed } from '../led/sysfs-led.ts';
import { HealthTracker } from '../status/health.ts';
import { CommandError } from '../supervisor/commands.ts';
import type { Extension, ExtensionContext } from '../supervisor/extension.ts';

export interface LedDeps {
  readonly files: LedFiles;
}

export const IDENTIFY_DEFAULT_S = 10;
// The MQTT contract (docs/asyncapi.yaml IdentifyArgs) allows at most 600.
const IDENTIFY_MAX_S = 600;

/**
 * The status LED(s) named in `led.names` show the device state (docs in README "Status LED").
 * Started first, so the LED blinks "booting" from the first moment and hears every event after.
 * Offers `identify` ({seconds}): a distinct pattern for that long, so a technician can find
 * the box a fleet operator means.
 */
export function ledCreate(context: ExtensionContext, overrides: Partial<LedDeps> = {}): Extension {
  const { config, logger, bus, commands, addon } = context;
  const files = overrides.files ?? realLedFiles;
  const offs: Array<() => void> = [];
  let leds: SysfsLed[] = [];
  let health: HealthTracker | undefined;
  let identifyUntil = 0;
  let identifyTimer: NodeJS.Timeout | undefined;
  let shown: LedState | undefined;
  /** LEDs whose last write failed: said once, not at every state change. */
  const failing = new Set<string>();

  const show = (state: LedState): void => {
    if (state === shown) return;
    shown = state;
    for (const led of leds) {
      const pattern = led.pick(ledPatternFor(state, led.maxBrightness));
      if (!pattern) continue;
      try {
        led.apply(pattern);
        failing.delete(led.name);
      } catch (error) {
        if (!failing.has(led.name)) {
          failing.add(led.name);
          logger.error({ led: led.name, code: (error as { code?: string }).code }, (error as Error).message);
        }
      }
    }
    logger.debug({ state, leds: leds.map((l) => l.name) }, `status LED: ${state}`);
  };

  const refresh = (): void => {
    if (!health) return;
    show(ledStateOf(health.assess(), Date.now() < identifyUntil));
  };

  return {
    name: 'led',
    start() {
      for (const name of config.led.names) {
        try {
          const led = new SysfsLed(config.led.sysfsPath, name, files);
          for (const state of ['degraded', 'noBroker', 'identify'] as const) {
            const [wanted] = ledPatternFor(state, led.maxBrightness);
            if (!led.triggers.has(wanted.trigger)) {
              logger.warn(
                { led: name, trigger: wanted.trigger },
                `LED ${name}: no "${wanted.trigger}" trigger in this kernel; ${state} uses a timer blink instead`,
              );
            }
          }
          leds.push(led);
        } catch (error) {
          // A missing LED must not stop the screens: say which and carry on without it.
          logger.error({ led: name, code: (error as { code?: string }).code }, (error as Error).message);
        }
      }
      // The supervisor's one health judgement, the same /healthz, MQTT status and systemd read.
      health = HealthTracker.acquire({ bus, config, frameLoops: () => addon.frameLoops() });
      offs.push(
        health.onChange(refresh),
        commands.register({
          name: 'identify',
          description: `Show the identify pattern on the status LED for {"seconds": 1-${IDENTIFY_MAX_S}} (default ${IDENTIFY_DEFAULT_S}).`,
          handler: (args, origin) => {
            const seconds = args.seconds ?? IDENTIFY_DEFAULT_S;
            if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 1 || seconds > IDENTIFY_MAX_S) {
              throw new CommandError(
                'ERR_BAD_ARGUMENT',
                `identify needs "seconds": an integer 1-${IDENTIFY_MAX_S}, got ${JSON.stringify(args.seconds)}`,
              );
            }
            identifyUntil = Date.now() + seconds * 1000;
            clearTimeout(identifyTimer);
            identifyTimer = setTimeout(refresh, seconds * 1000);
            identifyTimer.unref();
            logger.info(
              { seconds, leds: leds.map((l) => l.name), from: origin.from ?? origin.transport },
              `identify: ${config.device.name} (${config.device.id}) for ${seconds} s`,
            );
            refresh();
            return { seconds, leds: leds.map((l) => l.name), until: new Date(identifyUntil).toISOString() };
          },
        }),
      );
      refresh();
    },
    stop() {
      clearTimeout(identifyTimer);
      for (const off of offs.splice(0)) off();
      health?.release();
      health = undefined;
      // Dark after an orderly stop: a blinking LED would claim a supervisor is still deciding.
      show('off');
      leds = [];
    },
  };
}
