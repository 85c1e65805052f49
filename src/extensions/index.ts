import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { contentCreate } from './content.ts';
import { displayCreate } from './display.ts';
import { playbackCreate } from './playback.ts';

/**
 * The supervisor's extensions in start order; they stop in reverse. Playback comes first so it
 * hears display.ready, and stops after the display has let go of the outputs.
 */
export const builtinExtensions: readonly ExtensionDefinition[] = [
  { name: 'playback', create: playbackCreate },
  { name: 'display', create: displayCreate },
  { name: 'content', create: contentCreate },
];
