import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { displayCreate } from './display.ts';
import { ledCreate } from './led.ts';
import { playbackCreate } from './playback.ts';

/**
 * The supervisor's extensions in start order; they stop in reverse. Playback comes first so it
 * hears display.ready, and stops after the display has let go of the outputs. The ones after the
 * display are imported when their turn comes, and those marked `afterFirstFrame` only once the
 * outputs show their first frames: loading the MQTT client, the contract's validators and the
 * HTTP server never delays the picture (under TCG they took 17 s of the start).
 */
export const builtinExtensions: readonly ExtensionDefinition[] = [
  // First: the LED blinks "booting" from the start and hears every event after.
  { name: 'led', create: (context) => ledCreate(context) },
  { name: 'playback', create: playbackCreate, essential: true },
  { name: 'display', create: displayCreate, essential: true },
  // Before the first frame: what a box was told to show is what its screens start with.
  { name: 'content', create: async (context) => (await import('./content.ts')).contentCreate(context) },
  // The rest wait for the first frames. MQTT first of them: its first status already knows
  // what plays where (the bus keeps the latest of each event for it).
  {
    name: 'mqtt',
    create: async (context) => (await import('./mqtt.ts')).mqttCreate(context),
    afterFirstFrame: true,
  },
  { name: 'http', create: async (context) => (await import('./http.ts')).httpCreate(context), afterFirstFrame: true },
  // After MQTT (its job documents reach the fleet) and content; before systemd, whose STOPPING=1 comes first.
  {
    name: 'update',
    create: async (context) => (await import('./update.ts')).updateCreate(context),
    afterFirstFrame: true,
  },
  // Last: READY=1 only after everything else started, and STOPPING=1 first on the way down.
  // Essential: without it READY=1 never comes and systemd would kill the service after its start timeout anyway.
  {
    name: 'systemd',
    create: async (context) => (await import('./systemd.ts')).systemdCreate(context),
    essential: true,
    afterFirstFrame: true,
  },
];

/**
 * Test hook (test/hostile, MULTIHEAD_FAULT_EXTENSION=<name>): that extension's start fails, as a
 * broken module or a bad setting would make it, to prove the supervisor copes. Unset or empty:
 * the list as given. A name that is not in the list is a mistake in the test, not ignored.
 */
export function extensionsWithFault(
  extensions: readonly ExtensionDefinition[],
  faulty: string | undefined,
): readonly ExtensionDefinition[] {
  if (!faulty) return extensions;
  if (!extensions.some((e) => e.name === faulty)) {
    throw new Error(
      `MULTIHEAD_FAULT_EXTENSION=${faulty}: no such extension (one of ${extensions.map((e) => e.name).join(', ')})`,
    );
  }
  return extensions.map((e) =>
    e.name === faulty
      ? {
          ...e,
          create: () => {
            throw new Error(`fault injected by MULTIHEAD_FAULT_EXTENSION=${faulty}`);
          },
        }
      : e,
  );
}
