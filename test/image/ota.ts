// test/image --ota: the four update proofs of the image, driven the way a fleet drives a box:
// `firmware.update` over MQTT, artefacts from a plain HTTP server (artefact-server.ts, reached
// by the guest at 10.0.2.101), the job followed on jobs/<jobId>, QEMU killed for power cuts.
//
//   ota-tampered    a SHA256SUMS that lists a changed UKI: ERR_UPDATE_SIGNATURE, no artefact
//                   asked for, nothing written to the other slot
//   ota-running     v2 over MQTT: download, install, reboot, v2 runs from the other slot,
//   ota-blessed     the job succeeded once, the entry blessed, the data partition intact
//   ota-cut-download  power cut while v3 downloads: v2 boots, ERR_UPDATE_INTERRUPTED once, the
//                   same command resumes with a Range request
//   ota-cut-install power cut while root writes v3 into the other slot: v2 boots, ERR_UPDATE_INTERRUPTED
//   ota-rollback    v3 (built never to show video) installed: three tries, v2 back by itself,
//                   ERR_UPDATE_ROLLED_BACK, the slot reported bad
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ArtefactServer } from './artefact-server.ts';
import type { ImageVm } from './vm.ts';

export interface OtaVersions {
  /** Flashed (slot A). */
  readonly v1: string;
  /** Good (built from the same tree, the next version). */
  readonly v2: string;
  /** Bad (MULTIHEAD_IMAGE_FAULT=no-video). */
  readonly v3: string;
}

export interface OtaContext {
  readonly versions: OtaVersions;
  readonly server: ArtefactServer;
  readonly brokerPort: number;
  readonly results: string;
  readonly messages: ReadonlyArray<{ topic: string; payload: string; at: number }>;
  readonly metrics: { otaUpdate?: number; otaRollback?: number };
  check(id: string, body: () => Promise<string>): Promise<boolean>;
  fail(id: string, detail: string): void;
  say(line: string): void;
  boot(label: string, opts?: { waitAgent?: boolean }): Promise<ImageVm>;
  saveLogs(vm: ImageVm, label: string): Promise<void>;
  waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs?: number): Promise<T>;
}

interface JobDoc {
  jobId: string;
  state: string;
  stage?: string;
  version: string | null;
  bytesDone: number;
  bytesTotal: number;
  runningVersion?: string;
  error?: { code: string; message: string };
}

const DEVICE = 'image-test';
const URL_BASE = 'http://10.0.2.101';
const s = (ms: number): string => (ms / 1000).toFixed(1);

/** Where the server's files go: <root>/<name>/ with the artefacts of one version (or a tampered copy). */
export function otaServe(root: string, name: string, artefacts: string): void {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(artefacts)) fs.symlinkSync(path.join(artefacts, f), path.join(dir, f));
}

/**
 * A tampered copy of `artefacts`: the UKI with one byte more and a SHA256SUMS that lists the
 * changed file (what an attacker who can change the server writes); the signature is the
 * original's, so it no longer matches the list.
 */
export function otaServeTampered(root: string, name: string, artefacts: string, version: string): void {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true });
  const uki = `multihead_${version}.efi`;
  const changed = Buffer.concat([fs.readFileSync(path.join(artefacts, uki)), Buffer.from('x')]);
  fs.writeFileSync(path.join(dir, uki), changed);
  const sums = fs
    .readFileSync(path.join(artefacts, 'SHA256SUMS'), 'utf8')
    .replace(/^[0-9a-f]{64}(\s+\*?)(multihead_[^\s]+\.efi)$/m, (_, sep: string, name: string) => {
      return `${createHash('sha256').update(changed).digest('hex')}${sep}${name}`;
    });
  fs.writeFileSync(path.join(dir, 'SHA256SUMS'), sums);
  for (const f of fs.readdirSync(artefacts))
    if (f !== uki && f !== 'SHA256SUMS') fs.symlinkSync(path.join(artefacts, f), path.join(dir, f));
}

export async function otaRun(ctx: OtaContext, vmStart: ImageVm): Promise<ImageVm | undefined> {
  const { versions, server, messages } = ctx;
  const { v1, v2, v3 } = versions;
  const jobDocs = (jobId: string): JobDoc[] =>
    messages.filter((m) => m.topic === `multihead/${DEVICE}/jobs/${jobId}`).map((m) => JSON.parse(m.payload) as JobDoc);
  const jobEnd = (jobId: string, after: number, timeoutMs: number, what: string): Promise<JobDoc> =>
    ctx.waitUntil(what, timeoutMs, async () =>
      messages
        .filter((m) => m.at >= after && m.topic === `multihead/${DEVICE}/jobs/${jobId}`)
        .map((m) => JSON.parse(m.payload) as JobDoc)
        .find((d) => d.state === 'succeeded' || d.state === 'failed'),
    );
  const jobStage = (jobId: string, stage: string, timeoutMs: number): Promise<JobDoc> =>
    ctx.waitUntil(`job ${jobId} at stage ${stage}`, timeoutMs, async () =>
      jobDocs(jobId).find((d) => d.stage === stage || d.state === 'failed'),
    );
  /** A command over MQTT v5 (response topic), its reply body. */
  const command = async (name: string, args: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const replyTopic = `multihead/replies/fleet/${name}-${Date.now()}`;
    const r = spawnSync('mosquitto_pub', [
      ...['-h', '127.0.0.1', '-p', String(ctx.brokerPort), '-V', 'mqttv5', '-q', '1'],
      ...['-t', `multihead/${DEVICE}/cmd/${name}`, '-m', JSON.stringify({ args })],
      ...['-D', 'publish', 'response-topic', replyTopic],
    ]);
    if (r.status !== 0) throw new Error(`mosquitto_pub: ${r.stderr}`);
    const reply = await ctx.waitUntil(`the reply to ${name}`, 60_000, async () =>
      messages.find((m) => m.topic === `${replyTopic}/${DEVICE}`),
    );
    return JSON.parse(reply.payload) as Record<string, unknown>;
  };
  const update = async (url: string): Promise<{ jobId: string; at: number }> => {
    const at = Date.now();
    const body = await command('firmware.update', { url });
    const jobId = (body.result as { jobId?: string } | undefined)?.jobId;
    if (body.ok !== true || !jobId) throw new Error(`firmware.update ${url} answered ${JSON.stringify(body)}`);
    return { jobId, at };
  };
  /**
   * Waits for the job to reach `stage`. A job that ends ERR_UPDATE_INTERRUPTED or
   * ERR_UPDATE_DOWNLOAD first (the supervisor restarted, the network broke) is sent again, at
   * most twice, as image/README tells an operator to; each time is said in `notes`. Returns the
   * job that got there (or the last one, failed).
   */
  const untilStage = async (
    job: { jobId: string; at: number },
    url: string,
    stage: string,
    notes: string[],
  ): Promise<{ jobId: string; at: number; doc: JobDoc }> => {
    let current = job;
    for (let again = 0; ; again++) {
      const doc = await jobStage(current.jobId, stage, 1_200_000);
      const code = doc.state === 'failed' ? doc.error?.code : undefined;
      if (!code || again === 2 || !['ERR_UPDATE_INTERRUPTED', 'ERR_UPDATE_DOWNLOAD'].includes(code))
        return { ...current, doc };
      notes.push(`job ${current.jobId} ended ${code} (${doc.error?.message}); the command sent again`);
      current = await update(url);
    }
  };
  const online = (after: number, timeoutMs = 300_000): Promise<{ session?: number }> =>
    ctx.waitUntil('state online on the broker', timeoutMs, async () => {
      const m = messages.find(
        (x) => x.at >= after && x.topic === `multihead/${DEVICE}/state` && /"online"/.test(x.payload),
      );
      return m ? (JSON.parse(m.payload) as { session?: number }) : undefined;
    });
  const running = async (vm: ImageVm): Promise<{ version: string; root: string; label: string }> => {
    const version = /^IMAGE_VERSION=(.*)$/m.exec(await vm.sh('cat /etc/os-release'))?.[1]?.replaceAll('"', '') ?? '';
    const root = (await vm.sh('readlink -f "$(findmnt -n -o SOURCE /)"')).trim();
    const label = (await vm.sh(`udevadm info -q property ${root} | sed -n 's/^ID_PART_ENTRY_NAME=//p'`)).trim();
    return { version, root, label };
  };
  const labels = async (vm: ImageVm): Promise<string> =>
    (await vm.sh('for p in /dev/vda[0-9]*; do echo "$(basename $p)=$(blkid -p -s PART_ENTRY_NAME -o value $p)"; done'))
      .trim()
      .split('\n')
      .join(' ');
  const esp = async (vm: ImageVm): Promise<string> => (await vm.sh('ls /efi/EFI/Linux')).trim().split('\n').join(' ');
  /** The other root slot's device name (vda2 or vda3): the one / is not on. */
  const otherSlot = async (vm: ImageVm): Promise<string> => {
    const root = path.basename((await running(vm)).root);
    return root === 'vda2' ? 'vda3' : 'vda2';
  };
  /** The guest resets itself (QEMU runs with -no-reboot, so the reset ends it). */
  const resetAwaited = async (vm: ImageVm, timeoutMs: number, what: string): Promise<number> => {
    const gone = await Promise.race([vm.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!gone) throw new Error(`${what}: the guest did not reset within ${s(timeoutMs)} s`);
    return Date.now() - vm.startedAt;
  };

  /** Whether each head's picture changes within 20 looks (the demo moves). */
  const headsMoving = async (vm: ImageVm): Promise<boolean[]> => {
    const first = await Promise.all([0, 1, 2].map((h) => vm.screendump(h)));
    const moving = first.map(() => false);
    for (let look = 0; look < 20 && !moving.every(Boolean); look++) {
      await sleep(500);
      const now = await Promise.all([0, 1, 2].map((h) => vm.screendump(h)));
      now.forEach((d, h) => {
        if (!d.rgb.equals(first[h]?.rgb ?? Buffer.alloc(0))) moving[h] = true;
      });
    }
    return moving;
  };

  /** After a power cut: the box boots v2 again and reports the cut job ERR_UPDATE_INTERRUPTED. */
  const bootAfterCut = async (label: string, jobId: string): Promise<{ vm: ImageVm; end: JobDoc }> => {
    const afterCut = Date.now();
    const booted = await ctx.boot(label);
    const now = await running(booted);
    if (now.version !== v2) throw new Error(`after the cut: running ${now.version}, not ${v2}`);
    const end = await jobEnd(jobId, afterCut, 600_000, `job ${jobId} reported after the boot`);
    if (end.state !== 'failed' || end.error?.code !== 'ERR_UPDATE_INTERRUPTED')
      throw new Error(`the cut job ended ${JSON.stringify(end)}`);
    return { vm: booted, end };
  };

  let vm: ImageVm | undefined = vmStart;
  const configBefore = await vm.sh('cat /var/lib/multihead/config.json');
  // The data partition across the update: config, the MQTT session counter, media (names, sizes).
  const sessionBefore = Number(/\d+/.exec(await vm.sh('cat /var/lib/multihead/mqtt-session.json'))?.[0] ?? Number.NaN);
  const mediaList = (v: ImageVm): Promise<string> =>
    v.sh('cd /var/lib/multihead && find media -type f -printf "%p %s\\n" | sort');
  const mediaBefore = await mediaList(vm);
  await online(0);

  // 1. Tampered: refused on the signature, before any artefact byte and any slot write.
  const tamperedOk = await ctx.check('ota-tampered', async () => {
    const before = await labels(vm as ImageVm);
    const { jobId, at } = await update(`${URL_BASE}/tampered/`);
    const end = await jobEnd(jobId, at, 120_000, 'the end of the tampered job');
    if (end.state !== 'failed' || end.error?.code !== 'ERR_UPDATE_SIGNATURE')
      throw new Error(`the tampered job ended ${JSON.stringify(end)}`);
    const asked = server.requests.filter((r) => r.path.startsWith('/tampered/multihead_'));
    if (asked.length > 0) throw new Error(`artefacts were asked for: ${asked.map((r) => r.path).join(', ')}`);
    const after = await labels(vm as ImageVm);
    if (after !== before) throw new Error(`partition labels changed: ${before} → ${after}`);
    return `${end.error.code}: ${end.error.message.slice(0, 160)}; no artefact asked for; slots ${after}`;
  });
  if (!tamperedOk) ctx.say('# ota: going on after the tampered check failed');

  // 2. v2 over MQTT: download, install, reboot; the new version runs and is blessed.
  const before = await running(vm);
  let job2 = await update(`${URL_BASE}/${v2}/`);
  const job2At = job2.at;
  const notes2: string[] = [];
  const installed2 = await ctx.check('ota-install', async () => {
    // Playback goes on while the box downloads: every head's picture changes meanwhile.
    await jobStage(job2.jobId, 'download', 600_000);
    const moving = await headsMoving(vm as ImageVm);
    if (!moving.every(Boolean)) throw new Error(`heads still during the download: ${moving.join('/')}`);
    const reached = await untilStage(job2, `${URL_BASE}/${v2}/`, 'reboot', notes2);
    job2 = reached;
    const reboot = reached.doc;
    if (reboot.state === 'failed') throw new Error(`job failed: ${JSON.stringify(reboot.error)}; ${notes2.join('; ')}`);
    const docs = jobDocs(job2.jobId);
    // Each stage with the time to the next, from the documents' own stamps.
    const firsts: Array<{ stage: string; at: number }> = [];
    for (const d of docs) {
      const stage = d.stage ?? d.state;
      if (!firsts.some((f) => f.stage === stage))
        firsts.push({ stage, at: Date.parse((d as { at?: string }).at ?? '') });
    }
    const stages = firsts.map((f, i) => {
      const next = firsts[i + 1];
      return next && Number.isFinite(f.at) && Number.isFinite(next.at) ? `${f.stage} ${s(next.at - f.at)} s` : f.stage;
    });
    const progress = docs.filter((d) => d.stage === 'download' && d.bytesDone > 0).length;
    await resetAwaited(vm as ImageVm, 180_000, 'the reboot into the new version');
    const sent = server.requests.filter((r) => r.path.startsWith(`/${v2}/`));
    return `every head moving during the download; ${notes2.length ? `${notes2.join('; ')}; ` : ''}job ${job2.jobId}: ${stages.join(' → ')} (${progress} download progress documents, ${Math.round((docs.at(-1)?.bytesTotal ?? 0) / 1048576)} MiB) in ${s(Date.now() - job2At)} s; the server sent ${sent.map((r) => `${path.basename(r.path)} ${Math.round(r.sent / 1048576)} MiB`).join(', ')}; then the guest reset`;
  });
  if (!installed2) return vm;
  vm = undefined;
  await ctx.saveLogs(vmStart, 'ota-v1').catch(() => {});
  const afterV2 = Date.now();
  vm = await ctx.boot('ota-v2');
  const v2vm = vm;
  const ranV2 = await ctx.check('ota-running', async () => {
    const now = await running(v2vm);
    ctx.metrics.otaUpdate = (Date.now() - job2At) / 1000;
    if (now.version !== v2 || now.label !== `multihead_${v2}` || now.root === before.root)
      throw new Error(
        `running ${now.version} from ${now.root} (${now.label}); before ${before.version} from ${before.root}`,
      );
    const end = await jobEnd(job2.jobId, afterV2, 600_000, 'the job reported after the reboot');
    if (end.state !== 'succeeded' || end.runningVersion !== v2) throw new Error(`the job ended ${JSON.stringify(end)}`);
    const config = await v2vm.sh('cat /var/lib/multihead/config.json');
    if (config !== configBefore) throw new Error('config.json on the data partition changed across the update');
    const media = await mediaList(v2vm);
    if (media !== mediaBefore) throw new Error(`media changed across the update: ${mediaBefore} → ${media}`);
    const state = await online(afterV2);
    if (!((state.session ?? 0) > sessionBefore))
      throw new Error(
        `session ${state.session} after the update, ${sessionBefore} before: the counter on the data partition was lost`,
      );
    return `${v2} from ${now.root} (${now.label}; was ${before.root}) ${s(Date.now() - job2At)} s after the command; job succeeded (runningVersion ${end.runningVersion}); online with session ${state.session} (the counter was ${sessionBefore} before the update); config.json and ${mediaBefore.split('\n').filter(Boolean).length} media file(s) unchanged`;
  });
  await ctx.check('ota-blessed', async () => {
    const entries = await ctx.waitUntil(
      `multihead_${v2}.efi without a counter`,
      300_000,
      async () => {
        const list = await esp(v2vm);
        return list.split(' ').includes(`multihead_${v2}.efi`) ? list : undefined;
      },
      2000,
    );
    const succeeded = jobDocs(job2.jobId).filter((d) => d.state === 'succeeded').length;
    if (succeeded !== 1) throw new Error(`${succeeded} succeeded documents for job ${job2.jobId}`);
    const status = await command('firmware.status', {});
    const result = status.result as { version?: string; other?: { version?: string; state?: string } };
    if (result?.version !== v2 || result.other?.version !== v1 || result.other.state !== 'good')
      throw new Error(`firmware.status ${JSON.stringify(status)}`);
    // Slot B: the disk's second root partition, where v2 runs (the kernel's view above).
    if ((result as { slot?: string }).slot !== (path.basename(before.root) === 'vda2' ? 'B' : 'A'))
      throw new Error(`firmware.status names slot ${(result as { slot?: string }).slot}, not the one / is on`);
    return `ESP ${entries}; job succeeded once; firmware.status ${JSON.stringify(result)}`;
  });
  if (!ranV2) return vm;

  // 3. v3 with a power cut during its download: v2 boots, the job is reported interrupted.
  const other = await otherSlot(v2vm);
  server.hold(`${v3}.root.squashfs`, 24 * 1048576);
  const job3a = await update(`${URL_BASE}/${v3}/`);
  const cutDownload = await ctx.check('ota-cut-download', async () => {
    const held = await ctx.waitUntil('the download held after 24 MiB', 600_000, async () =>
      server.requests.find((r) => r.path === `/${v3}/multihead_${v3}.root.squashfs` && r.sent >= 24 * 1048576),
    );
    // The downloader syncs the partial every 4 MiB (the data partition's own commit is 30 s):
    // a few seconds held are enough for that sync to land before the cut.
    await sleep(5_000);
    await v2vm.powerCut();
    server.release();
    const booted = await bootAfterCut('ota-cut-download', job3a.jobId);
    vm = booted.vm;
    const { end } = booted;
    return `cut with ${Math.round(held.sent / 1048576)} MiB of the root sent; ${v2} booted; ${end.error?.code}: ${end.error?.message}`;
  });
  if (!cutDownload || !vm) return vm;

  // 4. Again, resumed; a power cut while root writes the other slot.
  const v2cut = vm as ImageVm;
  const requestsBefore = server.requests.length;
  let job3b = await update(`${URL_BASE}/${v3}/`);
  const notes3b: string[] = [];
  const cutInstall = await ctx.check('ota-cut-install', async () => {
    job3b = await untilStage(job3b, `${URL_BASE}/${v3}/`, 'install', notes3b);
    if ((job3b as { doc?: JobDoc }).doc?.state === 'failed')
      throw new Error(
        `the resumed job failed: ${JSON.stringify((job3b as { doc?: JobDoc }).doc?.error)}; ${notes3b.join('; ')}`,
      );
    const resumed = server.requests
      .slice(requestsBefore)
      .find((r) => r.path === `/${v3}/multihead_${v3}.root.squashfs` && /^bytes=[1-9]\d*-/.test(r.range ?? ''));
    if (!resumed)
      throw new Error(
        `no Range request resumed the root: ${server.requests
          .slice(requestsBefore)
          .map((r) => `${r.path} ${r.range ?? ''}`)
          .join(', ')}`,
      );
    // systemd-sysupdate writes the slot through the whole disk's node at the partition's offset,
    // so the kernel counts it on the disk, not on the partition: the disk's sectors written
    // since the install began, while root's install unit runs (systemd's state: a oneshot is
    // "activating" until its command ends), are the slot being written. The image has no
    // procps, so systemd is asked rather than pgrep.
    const disk = other.replace(/\d+$/, '');
    const probe = async (): Promise<{ sectors: number; installing: boolean }> => {
      const out = await v2cut.sh(
        `awk '{print $7}' /sys/class/block/${disk}/stat; systemctl show -p ActiveState --value multihead-update-install.service`,
      );
      const [sectors, state] = out.trim().split('\n');
      return { sectors: Number(sectors), installing: state?.trim() === 'activating' };
    };
    const base = (await probe()).sectors;
    // A job that fails or finishes its install before the cut ends the wait at once, with why.
    let over: string | undefined;
    const written = await ctx
      .waitUntil(
        'root writing the other slot',
        600_000,
        async () => {
          const docs = jobDocs(job3b.jobId);
          const failed = docs.find((d) => d.state === 'failed');
          if (failed) over = `the job failed during the install: ${failed.error?.code}: ${failed.error?.message}`;
          else if (docs.some((d) => d.stage === 'reboot')) over = 'the install ended before 64 MiB were seen written';
          if (over) return 0;
          const now = await probe();
          const bytes = (now.sectors - base) * 512;
          return now.installing && bytes >= 64 * 1048576 ? bytes : undefined;
        },
        250,
      )
      .then((bytes) => {
        if (over) throw new Error(over);
        return bytes;
      })
      .catch(async (error: Error) => {
        // What the job and root's installer did instead: the journal and the job's documents.
        await ctx.saveLogs(v2cut, 'ota-cut-install').catch(() => {});
        const docs = jobDocs(job3b.jobId).map((d) => `${d.state}/${d.stage ?? ''}${d.error ? ` ${d.error.code}` : ''}`);
        throw new Error(`${error.message}; job ${job3b.jobId} documents: ${[...new Set(docs)].join(', ')}`);
      });
    await v2cut.powerCut();
    const rebootAsked = jobDocs(job3b.jobId).some((d) => d.stage === 'reboot');
    if (rebootAsked) throw new Error('the install was over before the cut');
    const booted = await bootAfterCut('ota-cut-install', job3b.jobId);
    vm = booted.vm;
    const { end } = booted;
    const slots = await labels(vm);
    const entries = await esp(vm);
    if (slots.includes(`=multihead_${v3}`) || entries.includes(`multihead_${v3}`))
      throw new Error(`a cut install left a bootable ${v3}: slots ${slots}; ESP ${entries}`);
    return `${notes3b.length ? `${notes3b.join('; ')}; ` : ''}resumed with Range ${resumed.range}; cut while root's install unit was activating, ${Math.round(written / 1048576)} MiB written to ${disk} since the install began (the kernel's count); ${v2} booted; ${end.error?.code}: ${end.error?.message}; slots ${slots}; ESP ${entries}`;
  });
  if (!cutInstall || !vm) return vm;

  // 5. v3 installed for good: it never shows video, its tries run out, v2 comes back by itself.
  const v2again = vm as ImageVm;
  let job3c = await update(`${URL_BASE}/${v3}/`);
  const notes3c: string[] = [];
  await ctx.check('ota-rollback', async () => {
    const reached = await untilStage(job3c, `${URL_BASE}/${v3}/`, 'reboot', notes3c);
    job3c = reached;
    if (reached.doc.state === 'failed')
      throw new Error(`job failed: ${JSON.stringify(reached.doc.error)}; ${notes3c.join('; ')}`);
    await resetAwaited(v2again, 180_000, `the reboot into ${v3}`);
    const installedAt = Date.now();
    const tries: string[] = [];
    vm = undefined;
    // A bad try may reset before the test agent answers: each boot is whichever comes first.
    for (let n = 1; n <= 5; n++) {
      const v = await ctx.boot(`ota-rollback-${n}`, { waitAgent: false });
      const first = await Promise.race([
        v.exited.then(() => 'reset' as const),
        v.agentReady(600_000).then(
          () => 'agent' as const,
          () => 'reset' as const,
        ),
      ]);
      if (first === 'agent') {
        const now = await running(v);
        if (now.version === v2) {
          vm = v;
          break;
        }
        const after = await resetAwaited(v, 300_000, `boot ${n} of ${v3} giving up`);
        tries.push(`${now.version} reset ${s(after)} s after QEMU start`);
      } else {
        tries.push(`reset ${s(Date.now() - v.startedAt)} s after QEMU start`);
      }
    }
    if (!vm) throw new Error(`${v2} did not come back after ${tries.length} boots: ${tries.join(', ')}`);
    const back = vm as ImageVm;
    // What each try was, from systemd's own records: the journal on the data partition keeps
    // every boot, the ESP the entry's counter.
    const journal = await back.sh(
      'for b in -1 -2 -3; do journalctl -b $b -o cat --no-pager -u multihead-boot-ok.service -u multihead.service 2>/dev/null | grep -E "MULTIHEAD_IMAGE_FAULT|multihead-boot-ok.service: Failed|Failed to start multihead-boot-ok" | sort -u | tr "\\n" " "; echo; done',
    );
    fs.writeFileSync(path.join(ctx.results, 'ota-rollback-journal.txt'), journal);
    const judged = journal
      .trim()
      .split('\n')
      .filter((l) => /boot-ok/.test(l) && /MULTIHEAD_IMAGE_FAULT/.test(l));
    if (judged.length !== 3)
      throw new Error(
        `the journal does not show three failed tries of ${v3} (no supervisor, boot assessment failed):\n${journal}`,
      );
    const entries = await esp(back);
    if (!entries.split(' ').includes(`multihead_${v3}+0-3.efi`))
      throw new Error(`no multihead_${v3}+0-3.efi (tries used up) on the ESP: ${entries}`);
    ctx.metrics.otaRollback = (Date.now() - installedAt) / 1000;
    const end = await jobEnd(job3c.jobId, installedAt, 600_000, 'the rolled back job reported');
    if (end.state !== 'failed' || end.error?.code !== 'ERR_UPDATE_ROLLED_BACK' || end.runningVersion !== v2)
      throw new Error(`the job ended ${JSON.stringify(end)}`);
    const status = await command('firmware.status', {});
    const result = status.result as { version?: string; other?: { version?: string; state?: string } };
    if (result?.version !== v2 || result.other?.version !== v3 || result.other.state !== 'bad')
      throw new Error(`firmware.status after the rollback ${JSON.stringify(status)}`);
    const failed = jobDocs(job3c.jobId).filter((d) => d.state === 'failed').length;
    if (failed !== 1) throw new Error(`${failed} failed documents for job ${job3c.jobId}`);
    return `${notes3c.length ? `${notes3c.join('; ')}; ` : ''}${tries.length} tries of ${v3}: ${tries.join(', ')}; then ${v2} by itself ${s(Date.now() - installedAt)} s after the reboot into ${v3}; ${end.error?.code}: ${end.error?.message}; firmware.status ${JSON.stringify(result)}; ESP ${entries}`;
  });
  if (vm) await ctx.saveLogs(vm, 'ota-end').catch(() => {});
  return vm;
}
