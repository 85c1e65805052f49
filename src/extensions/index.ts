import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { contentCreate } from './content.ts';
import { displayCreate } from './display.ts';
import { httpCreate } from './http.ts';
import { ledCreate } from './led.ts';
import { mqttCreate } from './mqtt.ts';
import { playbackCreate } from './playback.ts';
import { systemdCreate } from './systemd.ts';

/**
 * The supervisor's extensions in start order; they stop in reverse. Playback comes first so it
 * hears display.ready, and stops after the display has let go of the outputs.
 */
export const builtinExtensions: readonly ExtensionDefinition[] = [
  // First: the LED blinks "booting" from the start and hears every event after.
  { name: 'led', create: (context) => ledCreate(context) },
  { name: 'playback', create: playbackCreate },
  { name: 'display', create: displayCreate },
  // After the display, so the first status it publishes already knows KMS or virtual outputs.
  { name: 'mqtt', create: (context) => mqttCreate(context) },
  { name: 'content', create: contentCreate },
  { name: 'http', create: (context) => httpCreate(context) },
  // Last: READY=1 only after everything else started, and STOPPING=1 first on the way down.
  { name: 'systemd', create: (context) => systemdCreate(context) },
];
