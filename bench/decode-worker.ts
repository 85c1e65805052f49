// One measured run of our engine for bench/decode.ts: the playback path the appliance runs on
// virtual outputs (DecodeManager + VirtualDisplay on its simulated 60 Hz vblank clock), with N
// outputs that each present every frame they are given, for one pass of the clip. Shared: one
// decoder for all outputs; exclusive: one per output (decode.shared off, the seed RFC's
// "before"). Prints what every output showed as JSON, then exits.
import { loadAddon } from '../src/native/addon.ts';

const [source, countText, framesText, mode, widthText, heightText] = process.argv.slice(2);
if (!source || !countText || !framesText || (mode !== 'shared' && mode !== 'exclusive') || !widthText || !heightText) {
  console.error('usage: decode-worker.ts SOURCE OUTPUTS CLIP_FRAMES shared|exclusive WIDTH HEIGHT');
  process.exit(64);
}
const count = Number(countText);
const clipFrames = Number(framesText);
const names = Array.from({ length: count }, (_, i) => `Virtual-${i + 1}`);

const addon = loadAddon();
// The CPU of the playing window, from the kernel's accounting for the whole process (every
// thread): Node's start and loading the addon are the same fixed cost on every side and are
// left out of the comparison (bench/decode.ts still reports the whole process beside it).
const cpuAtStart = process.cpuUsage();
const manager = new addon.DecodeManager({ sharedDecode: mode === 'shared', maxDecoders: 16 });
const display = new addon.VirtualDisplay(
  names.map((name) => ({ name, width: Number(widthText), height: Number(heightText), refresh: 60 })),
);
for (const name of names) {
  manager.acquire(name, { source, hw: 'software' });
  display.play(manager, name, [name]);
}

// One pass: until every output has the clip's last frame on show (its sequence numbers go on
// across the loop, so this is checked every 5 ms, well inside one 33 ms frame). A run that
// never gets there ends at twice the clip's length, and its outputs' counts say how far it got.
const started = Date.now();
const deadline = started + (clipFrames / 30) * 2000 + 10_000;
for (;;) {
  const stats = display.stats();
  if (stats.every((o) => o.sequence >= clipFrames) || Date.now() > deadline) break;
  await new Promise((r) => setTimeout(r, 5));
}
const elapsedS = (Date.now() - started) / 1000;
const stats = display.stats();
const status = manager.status();
display.close();
manager.close();
const cpu = process.cpuUsage(cpuAtStart);
const playCpuS = (cpu.user + cpu.system) / 1e6;
process.stdout.write(
  `${JSON.stringify({
    elapsedS,
    playCpuS,
    decoders: status.decoders.length,
    failures: status.decoders.flatMap((d) => (d.failure ? [d.failure] : [])),
    outputs: stats.map((o) => ({
      name: o.name,
      frames: o.frames,
      sequence: o.sequence,
      dropped: o.dropped,
      lateTicks: o.lateTicks,
    })),
  })}\n`,
);
