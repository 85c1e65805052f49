import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LedFiles } from '../../src/led/sysfs-led.ts';

export const ALL_TRIGGERS = ['none', 'kbd-scrolllock', 'timer', 'heartbeat', 'pattern', 'default-on', 'mmc0'];

/**
 * A fake /sys/class/leds: one directory per LED with the attribute files the kernel has. As in
 * the kernel, `trigger` lists what is available with the active one in brackets.
 */
export function fakeLeds(dir: string, names: string[], triggers = ALL_TRIGGERS, maxBrightness = 255): string {
  for (const name of names) {
    const led = join(dir, name);
    mkdirSync(led, { recursive: true });
    writeFileSync(join(led, 'trigger'), triggers.map((t) => (t === 'none' ? '[none]' : t)).join(' '));
    writeFileSync(join(led, 'brightness'), '0');
    writeFileSync(join(led, 'max_brightness'), String(maxBrightness));
    writeFileSync(join(led, 'delay_on'), '500');
    writeFileSync(join(led, 'delay_off'), '500');
    writeFileSync(join(led, 'pattern'), '');
  }
  return dir;
}

/** Real file access that remembers every write, as "<led>/<file>=<text>". */
export function recordingFiles(root: string): LedFiles & { writes: string[] } {
  const writes: string[] = [];
  return {
    writes,
    read: (path) => readFileSync(path, 'utf8'),
    write: (path, text) => {
      writeFileSync(path, text);
      writes.push(`${path.slice(root.length + 1)}=${text}`);
    },
  };
}

/** What one LED shows now, read back from its files. */
export function ledRead(root: string, name: string): Record<string, string> {
  const read = (f: string) => readFileSync(join(root, name, f), 'utf8').trim();
  return {
    trigger: read('trigger'),
    brightness: read('brightness'),
    delay_on: read('delay_on'),
    delay_off: read('delay_off'),
    pattern: read('pattern'),
  };
}
