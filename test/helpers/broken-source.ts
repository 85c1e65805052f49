import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ExecutionContext } from 'ava';
import type { DecodeStatus } from '../../src/native/addon.ts';
import type { ExtensionDefinition } from '../../src/supervisor/extension.ts';
import { testsrcClip } from './clips.ts';
import { scratchDir } from './tmp.ts';

/**
 * An HTTP source that fails mid-stream: the first request gets half of an MPEG-TS clip and then
 * a broken connection, every later one (FFmpeg's seek to loop) a 404. The decoder then stops with
 * "read failed", as it would when a CDN drops out.
 */
export async function brokenSourceServe(t: ExecutionContext): Promise<string> {
  const clip = readFileSync(testsrcClip(scratchDir(t), 'clip.ts', { size: '1280x720', seconds: 4, format: 'mpegts' }));
  let served = 0;
  const server = createServer((_request, response) => {
    if (served++ > 0) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-length': clip.length, 'content-type': 'video/mp2t' });
    response.write(clip.subarray(0, clip.length >> 1), () => setTimeout(() => response.destroy(), 300));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/clip.ts`;
}

/**
 * Test-only stand-in for "play this source on every output" until playback offers such a
 * command: a `test.playBroken` command that plays `source` on all outputs from a decoder of its
 * own, and reports that decoder on the bus next to playback's (decode.status), so status, health
 * and the page see a real decoder failure.
 */
export function brokenSourceExtension(source: string): ExtensionDefinition {
  return {
    name: 'broken-source',
    create: ({ bus, commands, addon }) => {
      const decode = new addon.DecodeManager({});
      let timer: NodeJS.Timeout | undefined;
      let withdraw: (() => void) | undefined;
      return {
        name: 'broken-source',
        start() {
          withdraw = commands.register({
            name: 'test.playBroken',
            description: 'Plays a source that fails mid-stream on every output (tests only).',
            handler: async () => {
              const screens = bus.latest('display.ready')?.screens;
              if (!screens) throw new Error('no display yet');
              const outputs = screens.outputs().map((o) => o.name);
              await decode.acquireAsync('broken', { source, hw: 'software' });
              screens.play(
                decode,
                'broken',
                outputs.map((output) => ({ output })),
              );
              for (const output of outputs) bus.emit('playback.changed', { output, source, reason: 'test' });
              timer = setInterval(async () => {
                const reply = await commands.invoke('decode.status', {}, { transport: 'internal' });
                const theirs = reply.ok ? (reply.result as DecodeStatus) : undefined;
                const mine = decode.status();
                // Ours last: an output's decoder is the last one listing it as a consumer.
                const decoders = [
                  ...(theirs?.decoders ?? []).map((d) => ({ ...d, consumers: [] })),
                  // Consumers are outputs, as playback names them.
                  ...mine.decoders.map((d) => ({ ...d, id: d.id + 100, consumers: outputs })),
                ];
                bus.emit('decode.status', { status: { ...(theirs ?? mine), decoders } });
              }, 500);
              return { outputs };
            },
          });
        },
        stop() {
          clearInterval(timer);
          withdraw?.();
          decode.close();
        },
      };
    },
  };
}
