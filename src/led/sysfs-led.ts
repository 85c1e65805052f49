import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LedPattern } from './patterns.ts';

/** File access, injected so tests can count writes against a fake sysfs tree. */
export interface LedFiles {
  read(path: string): string;
  write(path: string, text: string): void;
}

export const realLedFiles: LedFiles = {
  read: (path) => readFileSync(path, 'utf8'),
  write: (path, text) => writeFileSync(path, text),
};

export class LedError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'LedError';
    this.code = code;
  }
}

/**
 * One LED of the Linux LED class (`<sysfsPath>/<name>`). It hands patterns to kernel triggers and
 * writes only when the pattern changes. The triggers the kernel offers are read once: the
 * `trigger` file lists them with the active one in brackets, e.g. "none [timer] heartbeat".
 */
export class SysfsLed {
  readonly name: string;
  readonly dir: string;
  readonly maxBrightness: number;
  readonly triggers: ReadonlySet<string>;
  readonly #files: LedFiles;
  #current: string | undefined;

  constructor(sysfsPath: string, name: string, files: LedFiles = realLedFiles) {
    this.name = name;
    this.dir = join(sysfsPath, name);
    this.#files = files;
    let listed: string;
    try {
      listed = files.read(join(this.dir, 'trigger'));
    } catch (error) {
      throw new LedError(
        'ERR_LED_MISSING',
        `LED ${name}: cannot read ${join(this.dir, 'trigger')}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
    this.triggers = new Set(
      listed
        .split(/\s+/)
        .filter(Boolean)
        .map((t) => t.replace(/^\[(.*)\]$/, '$1')),
    );
    this.maxBrightness = 255;
    try {
      const max = Number.parseInt(files.read(join(this.dir, 'max_brightness')).trim(), 10);
      if (Number.isInteger(max) && max > 0) this.maxBrightness = max;
    } catch {
      // Older or fake trees without max_brightness: 255 is what the kernel clamps to anyway.
    }
  }

  /** The first of `choices` whose trigger the kernel offers, or undefined. */
  pick(choices: readonly (LedPattern | undefined)[]): LedPattern | undefined {
    return choices.find((p): p is LedPattern => p !== undefined && this.triggers.has(p.trigger));
  }

  /** Sets the pattern; a no-op when it is already set. Returns true when it wrote. */
  apply(pattern: LedPattern): boolean {
    const key = JSON.stringify(pattern);
    if (key === this.#current) return false;
    if (!this.triggers.has(pattern.trigger)) {
      throw new LedError(
        'ERR_LED_TRIGGER',
        `LED ${this.name}: the kernel offers no "${pattern.trigger}" trigger (has: ${[...this.triggers].join(', ')})`,
      );
    }
    // The trigger first: the kernel creates delay_on/delay_off or pattern only once it is set.
    this.#write('trigger', pattern.trigger);
    switch (pattern.trigger) {
      case 'none':
        this.#write('brightness', String(pattern.brightness));
        break;
      case 'timer':
        this.#write('delay_on', String(pattern.delayOnMs));
        this.#write('delay_off', String(pattern.delayOffMs));
        break;
      case 'pattern':
        this.#write('pattern', pattern.pattern);
        break;
      case 'heartbeat':
        break;
    }
    this.#current = key;
    return true;
  }

  #write(file: string, text: string): void {
    const path = join(this.dir, file);
    try {
      this.#files.write(path, text);
    } catch (error) {
      this.#current = undefined;
      throw new LedError(
        'ERR_LED_WRITE',
        `LED ${this.name}: cannot write "${text}" to ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
  }
}
