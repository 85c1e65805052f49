import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { Screens } from '../src/display/screens.ts';
import { updateCreate } from '../src/extensions/update.ts';
import { rebootRequestWrite } from '../src/mqtt/reboot-request.ts';
import type { EventBus } from '../src/supervisor/bus.ts';
import type { ExtensionDefinition } from '../src/supervisor/extension.ts';
import type { Installer, SlotsInfo } from '../src/update/installer.ts';
import type { FirmwareUpdate } from '../src/update/job.ts';
import { jobStorePath, jobStoreRead } from '../src/update/job-store.ts';
import { assertEveryMessageValid } from './helpers/contract-check.ts';
import { type MediaServer, mediaServerStart } from './helpers/media-server.ts';
import { type Broker, FleetClient, mosquittoStart, type Received } from './helpers/mosquitto.ts';
import { type Device, deviceStart } from './helpers/mqtt-device.ts';
import { scratchDir } from './helpers/tmp.ts';
import {
  type Artefacts,
  artefactsMake,
  artefactsServe,
  type SigningKey,
  sha256,
  signingKeyMake,
} from './helpers/update-artefacts.ts';

/**
 * The installer's stand-in (on the box: systemd-sysupdate writing the other slot). It records
 * each call with what the directory held then, so a test can prove it was handed verified files.
 */
class FakeInstaller implements Installer {
  readonly calls: Array<{ dir: string; version: string; files: Record<string, string> }> = [];
  supported = true;
  other: NonNullable<SlotsInfo['other']> = { state: 'empty' };

  async unsupported(): Promise<string | undefined> {
    return this.supported ? undefined : 'no update transfer files in /usr/lib/sysupdate.d: not an A/B appliance image';
  }

  async install(dir: string, version: string): Promise<void> {
    const files: Record<string, string> = {};
    for (const name of readdirSync(dir).sort()) files[name] = sha256(readFileSync(join(dir, name)));
    this.calls.push({ dir, version, files });
  }

  async slots(): Promise<SlotsInfo> {
    return { slot: 'A', other: this.other };
  }
}

interface Box {
  readonly device: Device;
  /** Its `state` birth. */
  readonly birth: Received;
  readonly runDir: string;
  readonly installer: FakeInstaller;
}

interface Rig {
  readonly broker: Broker;
  readonly fleet: FleetClient;
  readonly server: MediaServer;
  readonly key: SigningKey;
  readonly dataDir: string;
  /** Starts the supervisor (MQTT, then the update extension) as a box running `running` in boot `bootId`. */
  boot(running: string, bootId: string, installer?: FakeInstaller): Promise<Box>;
}

async function rig(t: ExecutionContext): Promise<Rig> {
  const broker = await mosquittoStart(t);
  const server = await mediaServerStart();
  t.teardown(() => server.close());
  const key = signingKeyMake(t);
  const fleet = await FleetClient.connect(t, broker.url);
  await fleet.subscribe('multihead/#');
  const dataDir = scratchDir(t);
  const boot = async (running: string, bootId: string, installer = new FakeInstaller()): Promise<Box> => {
    const runDir = scratchDir(t);
    const update: ExtensionDefinition = {
      name: 'update',
      create: (context) =>
        updateCreate(context, {
          installer,
          running: () => running,
          bootId: () => bootId,
          runDir,
          // The real reboot request (src/mqtt/reboot-request.ts) into this box's run directory.
          rebootRequest: (jobId) =>
            void rebootRequestWrite(runDir, {
              requestedAt: new Date().toISOString(),
              transport: 'internal',
              from: `firmware.update ${jobId}`,
            }),
          progressEveryMs: 20,
          retry: { attempts: 2, baseMs: 5, maxMs: 10 },
          stallMs: 5000,
        }),
    };
    const online = fleet.received.length;
    const device = await deviceStart(t, {
      url: broker.url,
      dataDir,
      file: { update: { keyring: key.keyring } },
      after: [update],
    });
    const birth = await fleet.next(
      (m) =>
        fleet.received.indexOf(m) >= online &&
        m.topic === 'multihead/dev-1/state' &&
        (m.json as { state: string }).state === 'online',
      10_000,
      'the birth',
    );
    return { device, runDir, installer, birth };
  };
  return { broker, fleet, server, key, dataDir, boot };
}

async function command(fleet: FleetClient, name: string, args: Record<string, unknown>): Promise<Received> {
  const replyTo = `multihead/replies/fleet/${randomUUID()}`;
  await fleet.publish(`multihead/dev-1/cmd/${name}`, JSON.stringify({ replyTo, args }));
  return fleet.next((m) => m.topic === `${replyTo}/dev-1`, 10_000, `the ${name} reply`);
}

const docsOf = (fleet: FleetClient, jobId: string): FirmwareUpdate[] =>
  fleet.on(`multihead/dev-1/jobs/${jobId}`).map((m) => m.json as FirmwareUpdate);

function ended(fleet: FleetClient, jobId: string, what = 'the end of the job'): Promise<Received> {
  return fleet.next(
    (m) =>
      m.topic === `multihead/dev-1/jobs/${jobId}` && ['succeeded', 'failed'].includes((m.json as FirmwareUpdate).state),
    20_000,
    what,
  );
}

async function update(fleet: FleetClient, args: Record<string, unknown>): Promise<string> {
  const reply = await command(fleet, 'firmware.update', args);
  const body = reply.json as { ok: boolean; result?: { jobId: string }; error?: unknown };
  if (!body.ok) throw new Error(`firmware.update refused: ${JSON.stringify(body.error)}`);
  return body.result?.jobId as string;
}

/** The screens show video: what the health judgement needs to call this version good. */
function videoShows(bus: EventBus): void {
  const screens: Screens = {
    kind: 'virtual',
    outputs: () => [{ name: 'Virtual-1', width: 1280, height: 720, refresh: 60 }],
    play: () => {},
    snapshotJpeg: async () => undefined,
    stats: () => [],
  };
  bus.emit('display.ready', { mode: 'virtual', reason: 'test', screens });
  bus.emit('playback.changed', { output: 'Virtual-1', source: 'a.mp4', reason: 'test' });
  bus.emit('output.stats', { outputs: [{ name: 'Virtual-1', frames: 10, dropped: 0 }] });
}

/** The job's end, and that nothing of it comes again: a third start reports nothing more. */
async function noFurtherReport(t: ExecutionContext, r: Rig, jobId: string, bootId: string, running: string) {
  const before = docsOf(r.fleet, jobId).length;
  t.true(jobStoreRead(r.dataDir)?.reported, 'marked reported on the data partition');
  const again = await r.boot(running, bootId);
  // A command answered by the update extension after its start: the report, had there been one, went first.
  t.like((await command(r.fleet, 'firmware.status', {})).json, { ok: true, result: { version: running } });
  t.is(docsOf(r.fleet, jobId).length, before, 'no document after the report');
  await again.device.stop();
}

function contractChecked(t: ExecutionContext, fleet: FleetClient): void {
  assertEveryMessageValid(t, fleet.received, { expect: ['Job', 'CommandReply', 'Status', 'State'] });
}

test.serial(
  'firmware.update: download with progress, verified install, reboot, then succeeded once on the new version',
  async (t) => {
    const r = await rig(t);
    const a = artefactsMake(r.key, '0.2.0', { rootBytes: 192 * 1024 });
    const url = artefactsServe(r.server, 'fw/0.2.0', a, {
      [a.root]: [{ kind: 'slow', chunk: 16 * 1024, everyMs: 15 }],
    });
    const box = await r.boot('0.1.0', 'boot-1');
    const jobId = await update(r.fleet, { url });
    const end = await r.fleet.next(
      (m) => m.topic === `multihead/dev-1/jobs/${jobId}` && (m.json as FirmwareUpdate).stage === 'reboot',
      20_000,
      'the reboot stage',
    );
    t.like(end.json, { state: 'in_progress', version: '0.2.0', from: '0.1.0', bytesDone: 224 * 1024, percent: 100 });
    const docs = docsOf(r.fleet, jobId);
    t.is(docs[0]?.state, 'accepted');
    t.deepEqual(
      [...new Set(docs.map((d) => d.stage).filter(Boolean))],
      ['verify', 'download', 'install', 'reboot'],
      'the signature first, then download, the sha256 check, install, reboot',
    );
    t.true(
      docs.some((d) => d.stage === 'download' && d.bytesDone > 0 && d.bytesDone < d.bytesTotal),
      'download progress in between',
    );
    // The installer got the verified artefacts and the signed list, under their own names.
    t.is(box.installer.calls.length, 1);
    t.deepEqual(box.installer.calls[0], {
      dir: join(r.dataDir, 'updates', '0.2.0'),
      version: '0.2.0',
      files: Object.fromEntries([...a.files].map(([name, data]) => [name, sha256(data)]).sort()),
    });
    t.true(existsSync(join(box.runDir, 'reboot-request')), 'the reboot was requested through the reboot request');
    t.like(jobStoreRead(r.dataDir), { jobId, target: '0.2.0', from: '0.1.0', bootId: 'boot-1', reported: false });
    await box.device.stop();

    // The box comes back on 0.2.0: health stage until the screens show video, then succeeded.
    const after = await r.boot('0.2.0', 'boot-2');
    t.like(after.birth.json, { state: 'online', firmware: { version: '0.2.0', slot: 'A', other: { state: 'empty' } } });
    await r.fleet.next(
      (m) => m.topic === `multihead/dev-1/jobs/${jobId}` && (m.json as FirmwareUpdate).stage === 'health',
      10_000,
      'the health stage',
    );
    // A round trip through the box: had it reported at once, the report would be here and on disk by now.
    t.like((await command(r.fleet, 'firmware.status', {})).json, { ok: true, result: { version: '0.2.0' } });
    t.false(jobStoreRead(r.dataDir)?.reported, 'not reported before the screens show video');
    t.is(docsOf(r.fleet, jobId).filter((d) => d.state === 'succeeded').length, 0, 'not before the screens show video');
    videoShows(after.device.controller.bus);
    const done = await ended(r.fleet, jobId);
    t.like(done.json, { state: 'succeeded', version: '0.2.0', from: '0.1.0', runningVersion: '0.2.0' });
    t.true(existsSync(join(after.runDir, 'boot-healthy')), 'the boot health marker for boot assessment');
    t.false(existsSync(join(r.dataDir, 'updates', '0.2.0')), 'the downloads are given back');
    await r.fleet.next(
      (m) =>
        m.topic === 'multihead/dev-1/status' &&
        (m.json as { firmware?: { version: string } }).firmware?.version === '0.2.0',
      5000,
      'status with the firmware',
    );
    await after.device.stop();
    await noFurtherReport(t, r, jobId, 'boot-2', '0.2.0');
    t.is(docsOf(r.fleet, jobId).filter((d) => d.state === 'succeeded' || d.state === 'failed').length, 1);
    contractChecked(t, r.fleet);
  },
);

test.serial('firmware.update: back on the old version after the reboot is ERR_UPDATE_ROLLED_BACK, once', async (t) => {
  const r = await rig(t);
  const a = artefactsMake(r.key, '0.3.0');
  const url = artefactsServe(r.server, 'fw', a);
  const box = await r.boot('0.2.0', 'boot-1');
  const jobId = await update(r.fleet, { url, version: '0.3.0' });
  await r.fleet.next(
    (m) => m.topic === `multihead/dev-1/jobs/${jobId}` && (m.json as FirmwareUpdate).stage === 'reboot',
    20_000,
    'the reboot stage',
  );
  await box.device.stop();
  // Only the supervisor restarted (same boot): the reboot is still to come, nothing is reported.
  const restarted = await r.boot('0.2.0', 'boot-1');
  t.like((await command(r.fleet, 'firmware.update', { url })).json, { ok: false, error: { code: 'ERR_UPDATE_BUSY' } });
  await restarted.device.stop();
  t.false(jobStoreRead(r.dataDir)?.reported);

  const installer = new FakeInstaller();
  installer.other = { version: '0.3.0', state: 'bad' };
  const back = await r.boot('0.2.0', 'boot-3', installer);
  const done = await ended(r.fleet, jobId);
  t.like(done.json, {
    state: 'failed',
    version: '0.3.0',
    runningVersion: '0.2.0',
    error: { code: 'ERR_UPDATE_ROLLED_BACK' },
  });
  t.regex(
    (done.json as FirmwareUpdate).error?.message ?? '',
    /running 0\.2\.0 after the reboot, not 0\.3\.0: .*its slot is marked bad/,
  );
  await back.device.stop();
  await noFurtherReport(t, r, jobId, 'boot-3', '0.2.0');
  t.is(docsOf(r.fleet, jobId).filter((d) => d.state === 'failed').length, 1);
  contractChecked(t, r.fleet);
});

test.serial(
  'firmware.update: a tampered artefact is ERR_UPDATE_SIGNATURE and the installer is never called',
  async (t) => {
    const r = await rig(t);
    const a: Artefacts = artefactsMake(r.key, '0.2.0');
    // The signed list stays; the root image on the server is not the one that was signed.
    const bytes = Buffer.from(a.files.get(a.root) as Buffer);
    bytes[100] = (bytes[100] ?? 0) ^ 1;
    a.files.set(a.root, bytes);
    const url = artefactsServe(r.server, 'fw', a);
    const box = await r.boot('0.1.0', 'boot-1');
    const jobId = await update(r.fleet, { url });
    const done = await ended(r.fleet, jobId);
    t.like(done.json, { state: 'failed', error: { code: 'ERR_UPDATE_SIGNATURE' } });
    t.regex(
      (done.json as FirmwareUpdate).error?.message ?? '',
      /multihead_0\.2\.0\.root\.squashfs: its sha256 .* signed SHA256SUMS/,
    );
    t.is(box.installer.calls.length, 0);
    t.false(existsSync(join(box.runDir, 'reboot-request')));
    t.like(
      jobStoreRead(r.dataDir),
      { jobId, reported: true, outcome: 'failed' },
      'said once, not again after a restart',
    );

    // A list signed by a key the box does not trust: refused before any artefact byte.
    const stranger = signingKeyMake(t, 'someone else');
    const b = artefactsMake(stranger, '0.2.0');
    const strangerUrl = artefactsServe(r.server, 'other', b);
    const second = await update(r.fleet, { url: strangerUrl });
    t.like((await ended(r.fleet, second)).json, {
      state: 'failed',
      version: null,
      error: { code: 'ERR_UPDATE_SIGNATURE' },
    });
    t.false(
      r.server.requests.some((q) => q.path.startsWith('/other/multihead_')),
      'no artefact was asked for',
    );
    t.is(box.installer.calls.length, 0);
    contractChecked(t, r.fleet);
  },
);

test.serial(
  'firmware.update: same version and downgrade are refused unless allowDowngrade; busy, unsupported and bad URLs at once',
  async (t) => {
    const r = await rig(t);
    const a = artefactsMake(r.key, '0.2.0');
    const url = artefactsServe(r.server, 'fw', a, { [a.root]: [{ kind: 'slow', chunk: 8 * 1024, everyMs: 20 }] });
    const installer = new FakeInstaller();
    const first = await r.boot('0.2.0', 'boot-1', installer);
    const same = await update(r.fleet, { url });
    t.like((await ended(r.fleet, same)).json, { state: 'failed', error: { code: 'ERR_UPDATE_SAME_VERSION' } });
    t.false(
      r.server.requests.some((q) => q.path.startsWith('/fw/multihead_')),
      'nothing downloaded',
    );

    const mismatch = await update(r.fleet, { url, version: '0.4.0' });
    t.like((await ended(r.fleet, mismatch)).json, { state: 'failed', error: { code: 'ERR_UPDATE_VERSION_MISMATCH' } });

    t.like((await command(r.fleet, 'firmware.update', { url: 'file:///etc/passwd' })).json, {
      ok: false,
      error: { code: 'ERR_INVALID_ARGS' },
    });
    installer.supported = false;
    const unsupported = (await command(r.fleet, 'firmware.update', { url })).json as {
      error: { code: string; message: string };
    };
    t.is(unsupported.error.code, 'ERR_UPDATE_UNSUPPORTED');
    t.regex(unsupported.error.message, /not an A\/B appliance image/);
    await first.device.stop();

    const newer = new FakeInstaller();
    await r.boot('0.3.0', 'boot-2', newer);
    const down = await update(r.fleet, { url });
    const refused = (await ended(r.fleet, down)).json as FirmwareUpdate;
    t.like(refused, { state: 'failed', error: { code: 'ERR_UPDATE_DOWNGRADE' } });
    t.regex(refused.error?.message ?? '', /0\.2\.0 is older than the running 0\.3\.0; send allowDowngrade/);

    const allowed = await update(r.fleet, { url, allowDowngrade: true });
    // While it downloads, a second update is refused.
    t.like((await command(r.fleet, 'firmware.update', { url })).json, {
      ok: false,
      error: { code: 'ERR_UPDATE_BUSY' },
    });
    await r.fleet.next(
      (m) => m.topic === `multihead/dev-1/jobs/${allowed}` && (m.json as FirmwareUpdate).stage === 'reboot',
      20_000,
      'the reboot stage',
    );
    t.is(newer.calls[0]?.version, '0.2.0');
    contractChecked(t, r.fleet);
  },
);

test.serial(
  'firmware.update: a power cut during the download or the install is reported after the boot as ERR_UPDATE_INTERRUPTED, once',
  async (t) => {
    const r = await rig(t);
    const a = artefactsMake(r.key, '0.2.0');
    const url = artefactsServe(r.server, 'fw', a, { [a.root]: [{ kind: 'slow', chunk: 8 * 1024, everyMs: 20 }] });
    const box = await r.boot('0.1.0', 'boot-1');
    const jobId = await update(r.fleet, { url });
    await r.fleet.next(
      (m) =>
        m.topic === `multihead/dev-1/jobs/${jobId}` &&
        (m.json as FirmwareUpdate).stage === 'download' &&
        (m.json as FirmwareUpdate).bytesDone > 0,
      20_000,
      'download progress',
    );
    // What the data partition holds at the moment of a power cut: the file as it is now. A
    // stop would end the job itself (ERR_UPDATE_ABORTED); a cut leaves this behind instead.
    const atCut = readFileSync(jobStorePath(r.dataDir), 'utf8');
    t.like(JSON.parse(atCut), { jobId, phase: 'download', target: '0.2.0', reported: false });
    await box.device.stop();
    writeFileSync(jobStorePath(r.dataDir), atCut);

    const seen = r.fleet.received.length;
    const after = await r.boot('0.1.0', 'boot-2');
    const done = await r.fleet.next(
      (m) =>
        r.fleet.received.indexOf(m) >= seen &&
        m.topic === `multihead/dev-1/jobs/${jobId}` &&
        (m.json as FirmwareUpdate).state === 'failed',
      20_000,
      'the report after the boot',
    );
    t.like(done.json, { state: 'failed', runningVersion: '0.1.0', error: { code: 'ERR_UPDATE_INTERRUPTED' } });
    t.regex(
      (done.json as FirmwareUpdate).error?.message ?? '',
      /the box restarted during the download of 0\.2\.0; nothing was installed and 0\.1\.0 still runs/,
    );
    await after.device.stop();
    await noFurtherReport(t, r, jobId, 'boot-2', '0.1.0');

    // Cut while root writes the other slot: the same, with the install named.
    const installing = JSON.stringify({ ...JSON.parse(atCut), phase: 'install', jobId: 'firmware-0000cafe' });
    writeFileSync(jobStorePath(r.dataDir), `${installing}\n`);
    const third = await r.boot('0.1.0', 'boot-3');
    const cut = await ended(r.fleet, 'firmware-0000cafe');
    t.like(cut.json, { state: 'failed', error: { code: 'ERR_UPDATE_INTERRUPTED' } });
    t.regex((cut.json as FirmwareUpdate).error?.message ?? '', /while 0\.2\.0 was being written into the other slot/);
    t.is(third.installer.calls.length, 0);
    await third.device.stop();
    contractChecked(t, r.fleet);
  },
);
