import * as fsp from 'node:fs/promises';

/**
 * The file operations the content code uses, so tests can inject faults (a disk that fills
 * up, a write that fails) without root. Node's `fs/promises` is the real one.
 */
export interface FileHandleLike {
  write(
    data: Uint8Array,
    offset?: number,
    length?: number,
    position?: number | null,
  ): Promise<{ bytesWritten: number }>;
  read(buffer: Uint8Array, offset: number, length: number, position: number | null): Promise<{ bytesRead: number }>;
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  stat(): Promise<{ size: number; mtimeMs: number }>;
  close(): Promise<void>;
}

export interface FileSystem {
  open(path: string, flags: string, mode?: number): Promise<FileHandleLike>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  mkdir(path: string, options: { recursive: true }): Promise<unknown>;
  stat(path: string): Promise<{ size: number; mtimeMs: number }>;
  readdir(path: string): Promise<string[]>;
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  /** Free space of the filesystem holding `path` (optional: a fake without it has no disk cap). */
  statfs?(path: string): Promise<{ bavail: number | bigint; bsize: number | bigint }>;
}

export const nodeFs: FileSystem = fsp;
