// The provisioning CLI (provision/multihead-provision) on small GPT images made here, and the
// device's apply step (provision/apply.ts) on a scratch data directory.
// Needs sfdisk (fdisk), mkfs.vfat (dosfstools) and mtools, which scripts/setup.sh installs.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const repo = path.resolve(import.meta.dirname, '..');
const CLI = path.join(repo, 'provision/multihead-provision');
const APPLY = path.join(repo, 'provision/apply.ts');
const NODE = process.execPath;
const ESP_OFFSET = 1048576;
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

/** A 40 MiB GPT image whose only partition is a 32 MiB FAT ESP at 1 MiB, like the real one's. */
function smallImage(dir: string, name = 'base.img'): string {
  const img = path.join(dir, name);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 40 * 1048576);
  execFileSync('sfdisk', ['--quiet', img], { input: 'label: gpt\nstart=2048, size=65536, type=uefi, name="esp"\n' });
  execFileSync('mkfs.vfat', ['--offset', '2048', '-n', 'ESP', img, '32768'], { stdio: 'ignore' });
  return img;
}

const espRead = (img: string, file = 'multihead-provision.json'): string =>
  execFileSync('mtype', ['-i', `${img}@@${ESP_OFFSET}`, `::/${file}`], { env: mtoolsEnv }).toString('utf8');

const espList = (img: string): string =>
  execFileSync('mdir', ['-b', '-i', `${img}@@${ESP_OFFSET}`, '::/'], { env: mtoolsEnv }).toString('utf8');

const run = (args: string[], cwd = repo) => {
  const r = spawnSync(CLI, args, { cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
};

const device = {
  device: { name: 'Lobby left', id: 'lobby-left', groups: ['lobby', 'floor-1'] },
  timezone: 'Europe/Berlin',
  mqtt: { url: 'mqtts://broker.example.com:8883', username: 'lobby-left', password: 's3cret' },
  network: { address: '192.168.1.50/24', gateway: '192.168.1.1', dns: ['192.168.1.1'] },
};

test('write puts the provisioning file on the ESP of an image, without root or a loop device', (t) => {
  const dir = scratchDir(t);
  const img = smallImage(dir);
  const input = writeJson(dir, 'lobby.json', device);
  const r = run(['write', img, input]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(JSON.parse(espRead(img)), device);
});

test('write --output leaves the original image untouched', (t) => {
  const dir = scratchDir(t);
  const img = smallImage(dir);
  const before = fs.readFileSync(img);
  const out = path.join(dir, 'out', 'lobby.img');
  const r = run(['write', img, writeJson(dir, 'lobby.json', device), '--output', out]);
  t.is(r.code, 0, r.stderr);
  t.true(fs.readFileSync(img).equals(before));
  t.is(JSON.parse(espRead(out)).device.id, 'lobby-left');
});

test('invalid input is refused with every problem named, and nothing is written', (t) => {
  const dir = scratchDir(t);
  const img = smallImage(dir);
  const bad = writeJson(dir, 'bad.json', {
    device: { name: 'a/b', groups: ['ok', 'ok'] },
    timezone: 'Mars/Olympus',
    mqtt: { url: 'http://broker', password: 'hunter2', cert: 'not a pem' },
    network: { address: '10.0.0.5' },
    colour: 'blue',
  });
  const r = run(['write', img, bad]);
  t.is(r.code, 65);
  for (const key of [
    'colour: unknown key',
    'device.name',
    'device.groups',
    'timezone',
    'mqtt.url',
    'mqtt.cert',
    'network.address',
  ]) {
    t.true(r.stderr.includes(key), `${key} missing from: ${r.stderr}`);
  }
  t.false(r.stderr.includes('hunter2'), 'a secret must not be echoed');
  t.false(espList(img).includes('multihead-provision.json'));

  const syntax = run(['check', writeJson(dir, 'syntax.json', '{"device": ')]);
  t.is(syntax.code, 65);
  t.regex(syntax.stderr, /syntax\.json: .*not valid JSON/s);
  t.is(run(['check', writeJson(dir, 'none.json', {})]).code, 65);
  t.regex(
    run(['check', writeJson(dir, 'cfg.json', { device: { name: 'x' }, config: { http: { port: 99999 } } })]).stderr,
    /config\.http\.port/,
  );
  t.is(run(['frobnicate']).code, 64);
});

test('an image without GPT or ESP is named in the error', (t) => {
  const dir = scratchDir(t);
  const junk = path.join(dir, 'junk.img');
  fs.writeFileSync(junk, Buffer.alloc(1 << 20));
  const r = run(['write', junk, writeJson(dir, 'lobby.json', device)]);
  t.is(r.code, 1);
  t.regex(r.stderr, /junk\.img: no GPT/);
});

test('bulk makes one image per CSV row, each with its own device', (t) => {
  const dir = scratchDir(t);
  const img = smallImage(dir);
  const csv = path.join(dir, 'fleet.csv');
  fs.writeFileSync(
    csv,
    [
      'name,id,groups,timezone,mqtt_url,mqtt_username,mqtt_password,address,gateway,dns',
      'Lobby left,lobby-left,lobby;floor-1,Europe/Berlin,mqtt://broker:1883,lobby-left,pw1,,,',
      '"Cafe, north",,cafe,UTC,mqtt://broker:1883,cafe,"p""w2",10.1.2.3/24,10.1.2.1,10.1.2.1;9.9.9.9',
      '',
    ].join('\r\n'),
  );
  const out = path.join(dir, 'images');
  const r = run(['bulk', img, csv, '--out-dir', out]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(out).sort(), ['cafe-north.img', 'lobby-left.img']);
  const lobby = JSON.parse(espRead(path.join(out, 'lobby-left.img')));
  t.deepEqual(lobby.device, { name: 'Lobby left', id: 'lobby-left', groups: ['lobby', 'floor-1'] });
  t.is(lobby.mqtt.password, 'pw1');
  const cafe = JSON.parse(espRead(path.join(out, 'cafe-north.img')));
  t.is(cafe.device.name, 'Cafe, north');
  t.is(cafe.mqtt.password, 'p"w2');
  t.deepEqual(cafe.network, { address: '10.1.2.3/24', gateway: '10.1.2.1', dns: ['10.1.2.1', '9.9.9.9'] });
  t.false(espList(img).includes('multihead-provision.json'), 'the base image stays unprovisioned');
});

test('bulk refuses the whole fleet when a row is wrong, naming the line', (t) => {
  const dir = scratchDir(t);
  const img = smallImage(dir);
  const csv = path.join(dir, 'fleet.csv');
  fs.writeFileSync(
    csv,
    'name,id,mqtt_url,mqtt_ca\nok,dev-1,mqtt://b,\nbad,dev 2,ftp://b,\nthird,dev-1,,\nfourth,dev-4,mqtts://b,missing.pem\n',
  );
  const out = path.join(dir, 'images');
  const r = run(['bulk', img, csv, '--out-dir', out]);
  t.is(r.code, 65);
  t.regex(r.stderr, /line 3 \(bad\): device\.id/);
  t.regex(r.stderr, /line 3 \(bad\): mqtt\.url/);
  t.regex(r.stderr, /line 4 \(third\): same image name dev-1\.img as line 2/);
  t.regex(r.stderr, /line 5 \(fourth\): mqtt_ca: cannot read missing\.pem/);
  t.false(fs.existsSync(out));
  t.regex(
    run(['bulk', img, writeJson(dir, 'cols.csv', 'name,colour\nx,blue\n'), '--out-dir', out]).stderr,
    /unknown column "colour"/,
  );
});

// --- The device side: apply.ts on a scratch data directory ---------------------------------

function applyRun(data: string, args: string[], input?: string) {
  const r = spawnSync(NODE, [APPLY, ...args], {
    encoding: 'utf8',
    input,
    env: { ...process.env, MULTIHEAD_DATA_DIR: data },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

test('apply writes config and secrets (0600) atomically, removes the file, and never applies it twice', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  const esp = path.join(dir, 'esp');
  fs.mkdirSync(data);
  fs.mkdirSync(esp);
  const file = path.join(esp, 'multihead-provision.json');
  fs.writeFileSync(file, JSON.stringify(device));

  const first = applyRun(data, ['apply', file]);
  t.is(first.code, 0, first.out);
  t.false(fs.existsSync(file), 'the file with the secrets left the ESP');
  const configFile = path.join(data, 'config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  t.is(config.device.name, 'Lobby left');
  t.is(config.mqtt.password, 's3cret');
  t.is(fs.statSync(configFile).mode & 0o777, 0o600);
  t.is(fs.readFileSync(path.join(data, 'system/hostname'), 'utf8'), 'lobby-left\n');
  t.is(fs.readlinkSync(path.join(data, 'system/localtime')), '/usr/share/zoneinfo/Europe/Berlin');
  t.regex(
    fs.readFileSync(path.join(data, 'system/network/10-multihead-static.network'), 'utf8'),
    /Address=192\.168\.1\.50\/24/,
  );
  t.deepEqual(
    fs.readdirSync(data).filter((n) => n.includes('.tmp-')),
    [],
  );

  // Changed later by hand; the same file put back must not undo that.
  fs.writeFileSync(configFile, JSON.stringify({ ...config, device: { ...config.device, name: 'Renamed' } }));
  fs.writeFileSync(file, JSON.stringify(device));
  const second = applyRun(data, ['apply', file]);
  t.is(second.code, 0, second.out);
  t.regex(second.out, /already applied/);
  t.false(fs.existsSync(file));
  t.is(JSON.parse(fs.readFileSync(configFile, 'utf8')).device.name, 'Renamed');
});

/** A desired layer as the supervisor saves it: last good, one on trial, a rolled-back record. */
function desiredLayerPlant(data: string): string[] {
  const names = ['config-desired.json', 'config-desired.trial.json', 'config-desired.rolled-back.json'];
  writeJson(data, names[0] as string, { version: 4, config: { mqtt: { url: 'mqtt://elsewhere:1883' } } });
  writeJson(data, names[1] as string, { version: 5, config: { device: { id: 'stolen' } }, boots: 0, since: 'x' });
  writeJson(data, names[2] as string, { version: 3, digest: 'x', reason: 'r', at: 'x' });
  return names;
}

test('a provisioning file drops the fleet desired layer, also when the same file is put back', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const file = path.join(dir, 'multihead-provision.json');
  let names = desiredLayerPlant(data);
  fs.writeFileSync(file, JSON.stringify(device));
  const first = applyRun(data, ['apply', file]);
  t.is(first.code, 0, first.out);
  for (const name of names) t.false(fs.existsSync(path.join(data, name)), `${name} left after provisioning`);

  // The technician's own file again (its digest is known): the config stays, the layer still goes.
  names = desiredLayerPlant(data);
  fs.writeFileSync(file, JSON.stringify(device));
  const again = applyRun(data, ['apply', file]);
  t.is(again.code, 0, again.out);
  t.regex(again.out, /already applied/);
  for (const name of names) t.false(fs.existsSync(path.join(data, name)), `${name} left after the same file`);
});

test('provisioning never prints the broker password, applied or rejected', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const file = path.join(dir, 'multihead-provision.json');
  fs.writeFileSync(
    file,
    JSON.stringify({ device: { name: 'x' }, mqtt: { url: 'mqtts://lobby:urlpw-4242@broker.example.com:8883' } }),
  );
  const ok = applyRun(data, ['apply', file]);
  t.is(ok.code, 0, ok.out);
  t.regex(ok.out, /broker mqtts:\/\/\[redacted\]@broker\.example\.com:8883/);
  t.false(ok.out.includes('urlpw-4242'), ok.out);

  // Not a broker URL at all, and not valid JSON: neither error quotes what was written.
  const badUrl = run([
    'check',
    writeJson(dir, 'u.json', { device: { name: 'x' }, mqtt: { url: 'lobby:urlpw-4242@b' } }),
  ]);
  t.is(badUrl.code, 65);
  t.regex(badUrl.stderr, /mqtt\.url/);
  t.false(badUrl.stderr.includes('urlpw-4242'), badUrl.stderr);
  const torn = run(['check', writeJson(dir, 't.json', '{"device": {"name": "x"}, "mqtt": {"password": urlpw-4242}}')]);
  t.is(torn.code, 65);
  t.false(torn.stderr.includes('urlpw-4242'), torn.stderr);
});

test('device ids and group names the topic contract uses are refused by provisioning', (t) => {
  const dir = scratchDir(t);
  for (const id of ['all', 'group', 'replies', 'ALL']) {
    const r = run(['check', writeJson(dir, `${id}.json`, { device: { name: 'x', id } })]);
    t.is(r.code, 65, id);
    t.regex(r.stderr, new RegExp(`device\\.id: must not be "${id}"`), r.stderr);
  }
  const groups = run(['check', writeJson(dir, 'g.json', { device: { name: 'x', groups: ['lobby', 'replies'] } })]);
  t.is(groups.code, 65);
  t.regex(groups.stderr, /device\.groups: must not name the group "replies"/);
});

test('a rejected provisioning file is overwritten and replaced by its reasons, with no secret left on the ESP', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  const esp = path.join(dir, 'esp');
  fs.mkdirSync(data);
  fs.mkdirSync(esp);
  const file = path.join(esp, 'multihead-provision.json');
  const secret = 'pw-6f1c9e-never-on-the-esp';
  fs.writeFileSync(
    file,
    JSON.stringify({ device: { name: 'x', id: 'replies' }, mqtt: { url: 'ftp://nope', password: secret } }),
  );
  // A second name for the same inode sees whether the bytes themselves were overwritten, not only unlinked.
  const inode = path.join(dir, 'same-inode');
  fs.linkSync(file, inode);
  const size = fs.statSync(file).size;

  const bad = applyRun(data, ['apply', file]);
  t.is(bad.code, 1);
  t.false(bad.out.includes(secret), bad.out);
  t.deepEqual(fs.readdirSync(esp), ['multihead-provision.errors.txt']);
  const reasons = fs.readFileSync(path.join(esp, 'multihead-provision.errors.txt'), 'utf8');
  t.regex(reasons, /mqtt\.url/);
  t.regex(reasons, /device\.id/);
  t.false(reasons.includes(secret));
  t.true(fs.readFileSync(inode).equals(Buffer.alloc(size)), 'the rejected file was overwritten before it was deleted');
  t.deepEqual(fs.readdirSync(data), [], 'nothing written to the data partition');
});

/** openssl makes the certificates; without it these checks cannot run, and that is a failure. */
function openssl(t: ExecutionContext, dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    t.fail(`openssl ${args[0]} failed (openssl is required: apt-get install openssl): ${r.error?.message ?? r.stderr}`);
    throw new Error('openssl is required for the certificate checks');
  }
}

test('apply puts PEM secrets in files of their own, and checks everything before writing any', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const file = path.join(dir, 'multihead-provision.json');
  openssl(t, dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=dev',
    '-keyout',
    'key.pem',
    '-out',
    'cert.pem',
  ]);
  const cert = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  const key = fs.readFileSync(path.join(dir, 'key.pem'), 'utf8');
  const tls = { device: { name: 'tls' }, mqtt: { url: 'mqtts://b:8883', ca: cert, cert, key } };

  // Valid alone, but the configuration it merges into does not load: no key may be written first.
  const configFile = path.join(data, 'config.json');
  fs.writeFileSync(configFile, JSON.stringify({ http: { port: 'eighty' } }));
  fs.writeFileSync(file, JSON.stringify(tls));
  const refused = applyRun(data, ['apply', file]);
  t.is(refused.code, 1, refused.out);
  t.regex(refused.out, /config\.http\.port/);
  t.false(fs.existsSync(path.join(data, 'secrets')), 'no secret written before the merged config was checked');
  t.false(refused.out.includes('PRIVATE KEY'));

  fs.rmSync(configFile);
  fs.writeFileSync(file, JSON.stringify(tls));
  const ok = applyRun(data, ['apply', file]);
  t.is(ok.code, 0, ok.out);
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  t.is(config.mqtt.key, '/var/lib/multihead/secrets/mqtt-client.key');
  for (const name of ['mqtt-ca.pem', 'mqtt-client.pem', 'mqtt-client.key']) {
    t.is(fs.statSync(path.join(data, 'secrets', name)).mode & 0o777, 0o600, name);
  }
  t.is(fs.readFileSync(path.join(data, 'secrets/mqtt-client.key'), 'utf8'), key);
  t.false(JSON.stringify(config).includes('PRIVATE KEY'), 'the key is not inlined in the config');

  // A key that does not belong to the certificate is caught before anything is written.
  openssl(t, dir, ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.pem']);
  const other = fs.readFileSync(path.join(dir, 'other.pem'), 'utf8');
  const check = run([
    'check',
    writeJson(dir, 'mismatch.json', { device: { name: 'x' }, mqtt: { url: 'mqtts://b', cert, key: other } }),
  ]);
  t.is(check.code, 65);
  t.regex(check.stderr, /mqtt\.key: does not belong to mqtt\.cert/);
});

test('write-config replaces the configuration atomically and refuses one the supervisor would not load', (t) => {
  const dir = scratchDir(t);
  const good = applyRun(dir, ['write-config'], JSON.stringify({ device: { name: 'A' } }));
  t.is(good.code, 0, good.out);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).device.name, 'A');
  const bad = applyRun(dir, ['write-config'], JSON.stringify({ http: { port: 'x' } }));
  t.is(bad.code, 78);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).device.name, 'A');
});
