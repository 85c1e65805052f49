// Issue 12 (points 1 and 3) against the real supervisor (bin/multihead, virtual outputs, the
// demo) and Debian's mosquitto: a source without a picture is answered with its error and
// never takes the screens; a source that stalls later is told (an MQTT event with an ERR_ code,
// health degraded naming the output) and the demo comes back, never black.
import { readFileSync } from 'node:fs';
import test from 'ava';
import { filesServe, testsrcClip } from '../helpers/clips.ts';
import { mediaServerStart } from '../helpers/media-server.ts';
import type { Received } from '../helpers/mosquitto.ts';
import { scratchDir } from '../helpers/tmp.ts';
import { HostileBox } from './box.ts';

interface Reply {
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
}

interface Status {
  health: { state: string; reasons: string[] };
  outputs: Array<{ name: string; source: string | null; video?: { state: string; code?: string } }>;
}

async function ask(box: HostileBox, command: string, args: Record<string, unknown> = {}, timeoutMs = 30_000) {
  return (await box.request(command, { args }, { timeoutMs })).json as Reply;
}

/** A JPEG of each output as base64, by output. */
async function shots(box: HostileBox): Promise<Map<string, string>> {
  const reply = await ask(box, 'screenshot', { width: 64 });
  if (!reply.ok) throw new Error(`screenshot failed: ${JSON.stringify(reply.error)}`);
  const list = (reply.result as { shots: Array<{ output: string; jpegBase64: string }> }).shots;
  return new Map(list.map((s) => [s.output, s.jpegBase64]));
}

/** The demo plays on `output`: what it shows changes (the test card moves every frame). */
async function pictureMoves(box: HostileBox, output: string, timeoutMs = 15_000): Promise<void> {
  const first = (await shots(box)).get(output);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = (await shots(box)).get(output);
    if (first !== undefined && now !== undefined && now !== first) return;
    if (Date.now() > deadline) throw new Error(`${output}: the picture did not change within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function statusOf(m: Received, id: string): Status | undefined {
  return m.topic === `multihead/${id}/status` ? (m.json as Status) : undefined;
}

test('12 play of an MP4 with its index at the end from a server without Range is answered with an error; the demo keeps playing', async (t) => {
  const dir = scratchDir(t);
  // The mp4 muxer writes the index (moov) after the media data unless told +faststart.
  const clip = testsrcClip(dir, 'index-last.mp4', { size: '160x90', seconds: 4 });
  const bytes = readFileSync(clip);
  t.true(bytes.indexOf('moov') > bytes.indexOf('mdat'), 'the index is at the end');
  // filesServe answers every request with the whole file, 200, no Accept-Ranges: no Range support.
  const server = await filesServe(t, { '/index-last.mp4': bytes });
  const box = await HostileBox.start(t);
  await pictureMoves(box, 'Virtual-1');
  const before = box.fleet.received.length;
  const reply = await ask(box, 'play', { source: server.url('/index-last.mp4') });
  t.false(reply.ok, `play was answered ${JSON.stringify(reply)}`);
  t.regex(reply.error?.code ?? '', /^ERR_/, JSON.stringify(reply.error));
  t.true(server.requests.length > 0, 'the server was asked');
  // The outputs kept the demo: it still moves on both, and status names it as their source.
  await pictureMoves(box, 'Virtual-1');
  await pictureMoves(box, 'Virtual-2');
  const decoders = await ask(box, 'decode.status');
  const sources = (decoders.result as { decoders: Array<{ source: string }> }).decoders.map((d) => d.source);
  t.true(
    sources.every((s) => s.startsWith('pattern:testcard?')),
    `only the demo decodes: ${JSON.stringify(sources)}`,
  );
  t.false(
    box.fleet.received
      .slice(before)
      .some((m) => (statusOf(m, box.id)?.outputs ?? []).some((o) => o.source?.includes('index-last'))),
    'no status ever named the refused source as shown',
  );
});

for (const [kind, what] of [
  ['stall', 'stalls (the connection stays open and nothing more comes)'],
  ['drop', 'hangs up'],
] as const) {
  test(`12 play of a source that ${what} later: an MQTT event with an ERR_ code, health degraded naming the output, then the demo back`, async (t) => {
    const dir = scratchDir(t);
    const clip = testsrcClip(dir, 'stalls.ts', { size: '160x90', seconds: 20, gop: 30, format: 'mpegts' });
    const bytes = readFileSync(clip);
    const server = await mediaServerStart();
    t.teardown(() => server.close());
    // 40% of the stream (8 s of it: past FFmpeg's 5 s probe, so the source opens and plays), then
    // the fault, on every request (a reopen meets it too).
    server.add('/stalls.ts', bytes, [], { kind, after: Math.floor(bytes.length * 0.4) });
    const box = await HostileBox.start(t);
    await pictureMoves(box, 'Virtual-1');
    const before = box.fleet.received.length;
    const reply = await ask(box, 'play', { source: server.url('/stalls.ts'), outputs: ['Virtual-1'] });
    t.true(reply.ok, `play was answered ${JSON.stringify(reply)}`);
    const after = (what: string, match: (m: Received) => boolean, timeoutMs = 90_000) =>
      box.fleet.next((m) => box.fleet.received.indexOf(m) >= before && match(m), timeoutMs, what);
    const event = await after('a decoder.failed event for Virtual-1', (m) => {
      const e = m.json as { type?: string; details?: { outputs?: string[] } };
      return (
        m.topic === `multihead/${box.id}/events` &&
        e?.type === 'decoder.failed' &&
        !!e.details?.outputs?.includes('Virtual-1')
      );
    });
    const details = (event.json as { details: { code: string; source: string } }).details;
    t.regex(details.code, /^ERR_DECODE_/, JSON.stringify(event.json));
    t.true(details.source.includes('/stalls.ts'));
    const degraded = await after(
      'status: health degraded naming Virtual-1 and the code',
      (m) => {
        const s = statusOf(m, box.id);
        return (
          s?.health.state === 'degraded' && s.health.reasons.some((r) => r.startsWith(`Virtual-1: ${details.code}`))
        );
      },
      15_000,
    );
    t.like(
      (degraded.json as Status).outputs.find((o) => o.name === 'Virtual-1'),
      { video: { state: 'error', code: details.code } },
    );
    // Back to the demo after the hold: status names it on Virtual-1, its picture moves again.
    await after(
      'status: the demo back on Virtual-1',
      (m) => {
        const s = statusOf(m, box.id);
        return !!s?.outputs.find((o) => o.name === 'Virtual-1')?.source?.startsWith('pattern:testcard?');
      },
      20_000,
    );
    await pictureMoves(box, 'Virtual-1');
    await pictureMoves(box, 'Virtual-2');
  });
}
