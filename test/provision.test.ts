// The provisioning CLI (provision/multihead-provision) on small GPT images made here, and the
// device's apply step (provision/apply.ts) on a scratch data directory.
// Needs sfdisk (fdisk), mkfs.vfat (dosfstools) and mtools, which scripts/setup.sh installs.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
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

  // Changed later (over MQTT, say); the same file put back must not undo that.
  fs.writeFileSync(configFile, JSON.stringify({ ...config, device: { ...config.device, name: 'Renamed' } }));
  fs.writeFileSync(file, JSON.stringify(device));
  const second = applyRun(data, ['apply', file]);
  t.is(second.code, 0, second.out);
  t.regex(second.out, /already applied/);
  t.false(fs.existsSync(file));
  t.is(JSON.parse(fs.readFileSync(configFile, 'utf8')).device.name, 'Renamed');
});

test('apply puts PEM secrets in files of their own and rejects a bad file with the reasons beside it', (t) => {
  const dir = scratchDir(t);
  const data = path.join(dir, 'data');
  fs.mkdirSync(data);
  const file = path.join(dir, 'multihead-provision.json');
  fs.writeFileSync(file, JSON.stringify({ device: { name: 'x' }, mqtt: { url: 'ftp://nope' } }));
  const bad = applyRun(data, ['apply', file]);
  t.is(bad.code, 1);
  t.false(fs.existsSync(file));
  t.true(fs.existsSync(path.join(dir, 'multihead-provision.rejected.json')));
  t.regex(fs.readFileSync(path.join(dir, 'multihead-provision.errors.txt'), 'utf8'), /mqtt\.url/);
  t.false(fs.existsSync(path.join(data, 'config.json')));

  const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
  if (!hasOpenssl) {
    t.log('openssl not installed: the certificate case is skipped');
    return;
  }
  execFileSync(
    'openssl',
    [
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
    ].concat(['-keyout', 'key.pem', '-out', 'cert.pem']),
    { cwd: dir, stdio: 'ignore' },
  );
  const cert = fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  const key = fs.readFileSync(path.join(dir, 'key.pem'), 'utf8');
  fs.writeFileSync(
    file,
    JSON.stringify({ device: { name: 'tls' }, mqtt: { url: 'mqtts://b:8883', ca: cert, cert, key } }),
  );
  const ok = applyRun(data, ['apply', file]);
  t.is(ok.code, 0, ok.out);
  const config = JSON.parse(fs.readFileSync(path.join(data, 'config.json'), 'utf8'));
  t.is(config.mqtt.key, '/var/lib/multihead/secrets/mqtt-client.key');
  for (const name of ['mqtt-ca.pem', 'mqtt-client.pem', 'mqtt-client.key']) {
    t.is(fs.statSync(path.join(data, 'secrets', name)).mode & 0o777, 0o600, name);
  }
  t.is(fs.readFileSync(path.join(data, 'secrets/mqtt-client.key'), 'utf8'), key);
  t.false(JSON.stringify(config).includes('PRIVATE KEY'), 'the key is not inlined in the config');

  // A key that does not belong to the certificate is caught before anything is written.
  execFileSync('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.pem'], {
    cwd: dir,
    stdio: 'ignore',
  });
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
