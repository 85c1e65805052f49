import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { contentCreate } from './content.ts';
import { displayCreate } from './display.ts';
import { mqttCreate } from './mqtt.ts';
import { playbackCreate } from './playback.ts';

/**
 * The supervisor's extensions in start order; they stop in reverse. Playback comes first so it
 * hears display.ready, and stops after the display has let go of the outputs.
 */
export const builtinExtensions: readonly ExtensionDefinition[] = [
  { name: 'playback', create: playbackCreate },
  { name: 'display', create: displayCreate },
  // After the display, so the first status it publishes already knows KMS or virtual outputs.
  { name: 'mqtt', create: (context) => mqttCreate(context) },
  { name: 'content', create: contentCreate },
];
