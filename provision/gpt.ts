// Finds partitions in a raw GPT disk image (no loop device, no root): the provisioning CLI
// needs the ESP's byte offset to hand to mtools (mcopy -i image@@offset).
import fs from 'node:fs';

export const ESP_TYPE = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';

export interface GptPartition {
  index: number;
  type: string;
  uuid: string;
  name: string;
  offset: number;
  size: number;
}

const guid = (b: Buffer): string => {
  const h = (s: Buffer): string => s.toString('hex');
  const le = (s: Buffer): string => h(Buffer.from(s).reverse());
  return `${le(b.subarray(0, 4))}-${le(b.subarray(4, 6))}-${le(b.subarray(6, 8))}-${h(b.subarray(8, 10))}-${h(b.subarray(10, 16))}`;
};

/** The partitions of a GPT image with 512-byte sectors; throws naming the file when it is not one. */
export function gptPartitions(image: string): GptPartition[] {
  const fd = fs.openSync(image, 'r');
  try {
    const read = (offset: number, length: number): Buffer => {
      const b = Buffer.alloc(length);
      const n = fs.readSync(fd, b, 0, length, offset);
      if (n !== length) throw new Error(`${image}: too short to be a disk image`);
      return b;
    };
    const header = read(512, 92);
    if (header.toString('latin1', 0, 8) !== 'EFI PART') throw new Error(`${image}: no GPT partition table`);
    const entriesLba = Number(header.readBigUInt64LE(72));
    const count = header.readUInt32LE(80);
    const entrySize = header.readUInt32LE(84);
    if (count > 1024 || entrySize < 128 || entrySize > 4096) throw new Error(`${image}: implausible GPT header`);
    const entries = read(entriesLba * 512, count * entrySize);
    const parts: GptPartition[] = [];
    for (let i = 0; i < count; i++) {
      const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
      if (e.subarray(0, 16).every((x) => x === 0)) continue;
      const first = Number(e.readBigUInt64LE(32));
      const last = Number(e.readBigUInt64LE(40));
      parts.push({
        index: i + 1,
        type: guid(e.subarray(0, 16)),
        uuid: guid(e.subarray(16, 32)),
        name: e.toString('utf16le', 56, 128).replace(/\0.*$/s, ''),
        offset: first * 512,
        size: (last - first + 1) * 512,
      });
    }
    return parts;
  } finally {
    fs.closeSync(fd);
  }
}

export function espOffset(image: string): number {
  const esp = gptPartitions(image).find((p) => p.type === ESP_TYPE);
  if (!esp) throw new Error(`${image}: no EFI system partition in its GPT`);
  return esp.offset;
}
