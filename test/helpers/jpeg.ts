// JPEGs read back by node-av (its own FFmpeg build, in process): what a browser or dashboard
// sees, checked by a decoder that is not the code under test.
import { Decoder, Demuxer } from 'node-av/api';

/** A decoded JPEG: its size and its Y, Cb, Cr planes (full range, as JPEG stores it), rows packed. */
export interface JpegPlanes {
  readonly width: number;
  readonly height: number;
  /** Y, Cb, Cr; Cb and Cr at half size each way (4:2:0). */
  readonly planes: readonly [Buffer, Buffer, Buffer];
  /** Y, Cb and Cr of one pixel. */
  at(x: number, y: number): [number, number, number];
}

export async function jpegDecode(jpeg: Buffer): Promise<JpegPlanes> {
  await using input = await Demuxer.open(jpeg);
  const stream = input.video();
  if (!stream) throw new Error('node-av found no picture in the JPEG');
  using decoder = await Decoder.create(stream);
  for await (const frame of decoder.frames(input.packets())) {
    if (!frame) continue;
    try {
      const { width, height } = frame;
      const pack = (p: number, w: number, h: number): Buffer => {
        const plane = frame.data?.[p];
        const stride = frame.linesize[p] ?? 0;
        if (!plane) throw new Error(`the decoded frame has no plane ${p}`);
        const out = Buffer.alloc(w * h);
        for (let y = 0; y < h; y++) plane.copy(out, y * w, y * stride, y * stride + w);
        return out;
      };
      const [cw, ch] = [Math.ceil(width / 2), Math.ceil(height / 2)];
      const planes = [pack(0, width, height), pack(1, cw, ch), pack(2, cw, ch)] as const;
      const at = (x: number, y: number): [number, number, number] => [
        planes[0][y * width + x] ?? -1,
        planes[1][(y >> 1) * cw + (x >> 1)] ?? -1,
        planes[2][(y >> 1) * cw + (x >> 1)] ?? -1,
      ];
      return { width, height, planes, at };
    } finally {
      frame.free();
    }
  }
  throw new Error('node-av decoded no frame from the JPEG');
}
