import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { displayCreate } from './display.ts';
import { ledCreate } from './led.ts';
import { playbackCreate } from './playback.ts';

/**
 * The supervisor's extensions in start order; they stop in reverse. Playback comes first so it
 * hears display.ready, and stops after the display has let go of the outputs. The ones after the
 * display are imported when their turn comes: the outputs show something before the supervisor
 * spends time loading the MQTT client, the schema validators or the HTTP metrics.
 */
export const builtinExtensions: readonly ExtensionDefinition[] = [
  // First: the LED blinks "booting" from the start and hears every event after.
  { name: 'led', create: (context) => ledCreate(context) },
  { name: 'playback', create: playbackCreate },
  { name: 'display', create: displayCreate },
  // After the display, so the first status it publishes already knows KMS or virtual outputs.
  { name: 'mqtt', create: async (context) => (await import('./mqtt.ts')).mqttCreate(context) },
  { name: 'content', create: async (context) => (await import('./content.ts')).contentCreate(context) },
  { name: 'http', create: async (context) => (await import('./http.ts')).httpCreate(context) },
  // Last: READY=1 only after everything else started, and STOPPING=1 first on the way down.
  { name: 'systemd', create: async (context) => (await import('./systemd.ts')).systemdCreate(context) },
];
