// The real-kernel suite: boots a Debian kernel under QEMU (TCG) once with virtio-gpu (3 heads)
// and once with vkms + udmabuf, and runs the KMS engine's cases in each. One line per case,
// then "N passed, M failed". Exit status 0 only when every case passed.
//
//   npm run test:vm                      everything
//   npm run test:vm -- --only flip-loop-300,refusals
//   npm run test:vm -- --gpu vkms
import { execFileSync } from 'node:child_process';
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

// The guests run bin/multihead from this tree (9p): its dist/ is built here, on the host's
// CPUs, before any guest could find it stale and build it under emulation.
execFileSync(path.join(repo, 'scripts/build.sh'), ['--stale'], { stdio: 'inherit' });

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

/** Boots the suite's VM and starts the KMS server in it; throws with the reason. */
async function suiteBoot(suite: Suite): Promise<{ vm: Vm; kms: KmsClient }> {
  const gpu = suite.options.gpu;
  let vm: Vm | undefined;
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
  try {
    return { vm, kms: await kmsClientStart(vm, repo) };
  } catch (e) {
    fs.writeFileSync(path.join(artefacts, `${gpu}-console.log`), vm.consoleLog());
    await vm.stop();
    throw e;
  }
}

/**
 * Whether the guest as a whole still answers: a command through the agent, a separate
 * process from the KMS server. A server that hangs is the code under test; a guest that
 * answers nothing at all is its kernel (or the emulator) and the case learned nothing.
 */
async function guestAnswers(vm: Vm): Promise<boolean> {
  try {
    await vm.exec(['true'], { timeoutMs: 20000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * What the wedged guest's kernel said: sysrq (enabled on the kernel command line) asks it
 * for every CPU's backtrace and the blocked tasks, then the console's last lines are kept.
 */
async function guestWedgedReport(vm: Vm, gpu: string, n: number): Promise<string> {
  for (const key of ['alt-sysrq-l', 'alt-sysrq-w']) {
    await vm.qmp('human-monitor-command', { 'command-line': `sendkey ${key}` }).catch(() => {});
  }
  const file = path.join(artefacts, `${gpu}-console-wedged-${n}.log`);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  fs.writeFileSync(file, vm.consoleLog());
  const tail = vm.consoleLog().trimEnd().split('\n').slice(-25).join('\n    ');
  return `the whole guest stopped answering (console in ${path.relative(repo, file)}); its last lines:\n    ${tail}`;
}

for (const suite of suites) {
  const cases = suite.cases.filter((c) => !only || only.has(c.id));
  if (cases.length === 0) continue;
  const gpu = suite.options.gpu;
  const bootStart = Date.now();
  let booted: { vm: Vm; kms: KmsClient } | undefined;
  try {
    booted = await suiteBoot(suite);
    say(`# ${gpu}: guest up in ${seconds(Date.now() - bootStart)}`);
  } catch (e) {
    say(`# ${gpu}: the VM did not start: ${(e as Error).message}`);
  }
  let wedged = 0;
  const retried = new Set<string>();
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i] as VmCase;
    if (!booted) {
      failed++;
      say(`FAIL ${gpu}/${c.id}: ${c.title}: the VM did not start (see above)`);
      continue;
    }
    const { vm, kms } = booted;
    const t0 = Date.now();
    const ctx: CaseContext = { vm, kms, repo, artefacts };
    try {
      const detail = await c.run(ctx);
      passed++;
      say(`PASS ${gpu}/${c.id}: ${c.title} (${seconds(Date.now() - t0)}): ${detail}`);
      continue;
    } catch (e) {
      const stderr = kms.stderr().trim();
      const answers = await guestAnswers(vm);
      // A guest whose kernel stopped answering altogether (seen once under TCG on a loaded
      // machine, after many cases in one boot) gets a fresh boot and the case one more try;
      // said loudly, and a second wedge fails it. A server that alone hangs is never retried.
      const retry = !answers && !retried.has(c.id);
      say(
        `${retry ? 'RETRY' : 'FAIL'} ${gpu}/${c.id}: ${c.title} (${seconds(Date.now() - t0)}): ${(e as Error).message}`,
      );
      if (stderr) say(`  guest stderr: ${stderr.split('\n').slice(-5).join(' | ')}`);
      if (!retry) failed++;
      if (answers) {
        // A case may leave the server dead or wedged; the next case gets a fresh one.
        await kms.stop().catch(() => {});
        try {
          booted = { vm, kms: await kmsClientStart(vm, repo) };
          continue;
        } catch (e2) {
          say(`# ${gpu}: the KMS server did not start again: ${(e2 as Error).message}`);
        }
      } else {
        say(`  ${await guestWedgedReport(vm, gpu, ++wedged)}`);
      }
      if (retry) {
        retried.add(c.id);
        i--;
      }
    }
    // The guest is past saving: boot a fresh one for the cases left.
    await booted.kms.stop().catch(() => {});
    await booted.vm.stop();
    booted = undefined;
    try {
      booted = await suiteBoot(suite);
      say(`# ${gpu}: booted a fresh guest for the cases left`);
    } catch (e) {
      say(`# ${gpu}: the VM did not start again: ${(e as Error).message}`);
    }
  }
  if (booted) {
    await booted.kms.stop().catch(() => {});
    fs.writeFileSync(path.join(artefacts, `${gpu}-console.log`), booted.vm.consoleLog());
    await booted.vm.stop();
  }
}

say(`# total ${seconds(Date.now() - started)}`);
say(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
