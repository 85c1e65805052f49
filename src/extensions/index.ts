import type { ExtensionDefinition } from '../supervisor/extension.ts';
import { displayCreate } from './display.ts';

/** The supervisor's extensions in start order; they stop in reverse. */
export const builtinExtensions: readonly ExtensionDefinition[] = [{ name: 'display', create: displayCreate }];
