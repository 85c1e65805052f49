// One measured run of our engine for bench/decode.ts: N consumers (outputs) on one source,
// decoding in real time for the given seconds. Prints the decoder's status as JSON.
import { loadAddon } from '../src/native/addon.ts';

const [source, countText, secondsText, sharedText] = process.argv.slice(2);
if (!source || !countText || !secondsText) {
  console.error('usage: decode-worker.ts SOURCE CONSUMERS SECONDS [shared|exclusive]');
  process.exit(64);
}
const addon = loadAddon();
const manager = new addon.DecodeManager({ sharedDecode: sharedText !== 'exclusive', maxDecoders: 16 });
for (let i = 1; i <= Number(countText); i++) manager.acquire(`output-${i}`, { source });
await new Promise((r) => setTimeout(r, Number(secondsText) * 1000));
const status = manager.status();
manager.close();
process.stdout.write(`${JSON.stringify(status)}\n`);
