// The real-kernel suite: boots a Debian kernel under QEMU (TCG) once with virtio-gpu (3 heads)
// and once with vkms + udmabuf, and runs the KMS engine's cases in each. One line per case,
// then "N passed, M failed". Exit status 0 only when every case passed.
//
//   npm run test:vm                      everything
//   npm run test:vm -- --only flip-loop-300,refusals
//   npm run test:vm -- --gpu vkms
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { type CaseContext, type VmCase, virtioCases, vkmsCases } from './cases.ts';
import { type KmsClient, kmsClientStart } from './kms-client.ts';
import { type Vm, type VmOptions, vmArtefacts, vmStart } from './qemu.ts';

const repo = path.resolve(import.meta.dirname, '../..');
const artefacts = path.join(repo, 'test-results', 'vm');

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    gpu: { type: 'string' },
    verbose: { type: 'boolean', default: false },
  },
});
const only = values.only ? new Set(values.only.split(',')) : undefined;
vkmsCases.push(...(await import('./cases-diagnose.ts')).diagnoseCases);

interface Suite {
  options: VmOptions;
  cases: VmCase[];
}
const allSuites: Suite[] = [
  { options: { gpu: 'virtio', heads: 3, headSize: { width: 1024, height: 768 } }, cases: virtioCases },
  { options: { gpu: 'vkms' }, cases: [...vkmsCases, ...(await import('./cases-video.ts')).videoCases] },
];
const suites = allSuites.filter((s) => !values.gpu || s.options.gpu === values.gpu);

let passed = 0;
let failed = 0;
const started = Date.now();
const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

fs.rmSync(artefacts, { recursive: true, force: true });
fs.mkdirSync(artefacts, { recursive: true });

// Kernel, initramfs and vkms: cached, so this is instant unless the recipe changed. The
// first build downloads from Debian's archive and takes a couple of minutes: show progress.
{
  const t0 = Date.now();
  try {
    const dir = await vmArtefacts((line) => {
      if (/stage|download|mmdebstrap: I:|built|vkms/.test(line) || values.verbose) say(`  ${line}`);
    });
    say(`# VM artefacts ${path.relative(repo, dir)} ready in ${seconds(Date.now() - t0)}`);
  } catch (e) {
    say(`FAIL vm/artefacts: building the guest kernel and initramfs: ${(e as Error).message}`);
    say('0 passed, 1 failed');
    process.exit(1);
  }
}

for (const suite of suites) {
  const cases = suite.cases.filter((c) => !only || only.has(c.id));
  if (cases.length === 0) continue;
  const gpu = suite.options.gpu;
  const bootStart = Date.now();
  let vm: Vm | undefined;
  let kms: KmsClient | undefined;
  try {
    // TCG runs the guest's CPUs on host threads without the memory ordering real CPUs give
    // cross-modified code, so the kernel's boot-time text patching (int3 in a static key)
    // rarely oopses before init. That is the emulator, not the code under test: boot again.
    for (let attempt = 1; ; attempt++) {
      try {
        vm = await vmStart({ ...suite.options, log: (l) => values.verbose && say(`  [${gpu}] ${l}`) });
        break;
      } catch (e) {
        const message = (e as Error).message;
        if (attempt >= 3 || !/Kernel panic|Oops/.test(message)) throw e;
        say(`# ${gpu}: the guest kernel crashed while booting under TCG (attempt ${attempt}); booting again`);
      }
    }
    kms = await kmsClientStart(vm, repo);
    say(`# ${gpu}: guest up in ${seconds(Date.now() - bootStart)}`);
  } catch (e) {
    say(`# ${gpu}: the VM did not start: ${(e as Error).message}`);
    for (const c of cases) {
      failed++;
      say(`FAIL ${gpu}/${c.id}: ${c.title}: the VM did not start (see above)`);
    }
    if (vm) fs.writeFileSync(path.join(artefacts, `${gpu}-console.log`), vm.consoleLog());
    await vm?.stop();
    continue;
  }
  for (const c of cases) {
    const t0 = Date.now();
    const ctx: CaseContext = { vm, kms, repo, artefacts };
    try {
      const detail = await c.run(ctx);
      passed++;
      say(`PASS ${gpu}/${c.id}: ${c.title} (${seconds(Date.now() - t0)}): ${detail}`);
    } catch (e) {
      failed++;
      say(`FAIL ${gpu}/${c.id}: ${c.title} (${seconds(Date.now() - t0)}): ${(e as Error).message}`);
      const stderr = kms.stderr().trim();
      if (stderr) say(`  guest stderr: ${stderr.split('\n').slice(-5).join(' | ')}`);
      // A case may leave the server dead or wedged; the next case gets a fresh one.
      await kms.stop().catch(() => {});
      kms = await kmsClientStart(vm, repo);
    }
  }
  await kms.stop().catch(() => {});
  fs.writeFileSync(path.join(artefacts, `${gpu}-console.log`), vm.consoleLog());
  await vm.stop();
}

say(`# total ${seconds(Date.now() - started)}`);
say(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
