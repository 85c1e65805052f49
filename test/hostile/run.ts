/**
 * npm run test:hostile: every attack in test/hostile/*.hostile.ts (one ava test each) against the
 * real supervisor and Debian's mosquitto; the last line is `hostile: N passed, M failed`.
 * A skipped, todo or crashed attack counts as failed: an attack that cannot run proves nothing.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const ava = spawn('ava', ['--config', 'test/hostile/ava.config.js', '--tap', ...process.argv.slice(2)], {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, PATH: `${root}node_modules/.bin:${process.env.PATH ?? ''}` },
});
let passed = 0;
let failed = 0;
let pending = '';
const take = (line: string): void => {
  process.stdout.write(`${line}\n`);
  if (/^ok \d+ /.test(line) && !/# (SKIP|TODO)/i.test(line)) passed += 1;
  else if (/^not ok \d+ /.test(line) || /^ok \d+ .*# (SKIP|TODO)/i.test(line)) failed += 1;
};
ava.stdout.setEncoding('utf8');
ava.stdout.on('data', (chunk: string) => {
  pending += chunk;
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) take(line);
});
ava.on('close', (code) => {
  if (pending) take(pending);
  // ava exiting non-zero with every counted test passing means something failed outside a test (an uncaught error).
  if (code !== 0 && failed === 0) failed = 1;
  if (passed === 0) failed = Math.max(failed, 1);
  console.log(`hostile: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
});
