import { readFileSync } from 'node:fs';
import test from 'ava';
import { schemaMarkdown } from '../src/config/describe.ts';
import { ConfigError, configLoad } from '../src/config/load.ts';
import { settingsFlat } from '../src/config/schema.ts';
import { scratchDir, writeJson } from './helpers/tmp.ts';

const MACHINE_ID = '0123456789abcdef0123456789abcdef';

/** Loads with no file and no environment unless the test gives them. */
function load(t: Parameters<typeof scratchDir>[0], options: Parameters<typeof configLoad>[0] = {}) {
  const dir = scratchDir(t);
  return configLoad({
    env: {},
    defaultPath: `${dir}/absent.json`,
    machineIdPath: writeJson(dir, 'machine-id', `${MACHINE_ID}\n`),
    hostname: 'kiosk-7',
    ...options,
  });
}

function loadError(t: Parameters<typeof scratchDir>[0], options: Parameters<typeof configLoad>[0]): ConfigError {
  const error = t.throws(() => load(t, options), { instanceOf: ConfigError });
  return error as ConfigError;
}

test('embedded defaults alone make a valid config, with id and name derived from the machine', (t) => {
  const { config, file, sources } = load(t);
  t.is(file, undefined);
  t.is(config.device.id, 'mh-0123456789ab');
  t.is(config.device.name, 'kiosk-7');
  t.is(config.outputs, 'auto');
  t.is(config.http.bind, '127.0.0.1');
  t.is(config.mqtt.url, '');
  t.is(sources.get('http.port'), 'default');
});

test('without a machine-id the device id falls back to the hostname', (t) => {
  const { config } = load(t, { machineIdPath: '/nonexistent/machine-id', hostname: 'shop.front' });
  t.is(config.device.id, 'mh-shop-front');
});

test('layers apply in order: defaults < file < environment < desired state', (t) => {
  const dir = scratchDir(t);
  const path = writeJson(dir, 'config.json', {
    http: { port: 9001, bind: '0.0.0.0' },
    log: { level: 'debug' },
    device: { name: 'Lobby' },
  });
  const { config, sources, file } = load(t, {
    path,
    env: { MULTIHEAD_HTTP_PORT: '9002', MULTIHEAD_LOG_LEVEL: 'warn', MULTIHEAD_DEVICE_GROUPS: 'lobby, floor-1' },
    desired: { log: { level: 'error' } },
  });
  t.is(file, path);
  t.is(config.http.bind, '0.0.0.0');
  t.is(sources.get('http.bind'), path);
  t.is(config.http.port, 9002);
  t.is(sources.get('http.port'), 'environment MULTIHEAD_HTTP_PORT');
  t.is(config.log.level, 'error');
  t.is(sources.get('log.level'), 'MQTT desired state');
  t.is(config.device.name, 'Lobby');
  t.deepEqual(config.device.groups, ['lobby', 'floor-1']);
});

test('MULTIHEAD_CONFIG names the file when --config is absent, and --config wins over it', (t) => {
  const dir = scratchDir(t);
  const fromEnv = writeJson(dir, 'env.json', { http: { port: 1111 } });
  const fromFlag = writeJson(dir, 'flag.json', { http: { port: 2222 } });
  t.is(load(t, { env: { MULTIHEAD_CONFIG: fromEnv } }).config.http.port, 1111);
  t.is(load(t, { env: { MULTIHEAD_CONFIG: fromEnv }, path: fromFlag }).config.http.port, 2222);
});

test('outputs accept "auto" or a connector list, from file or environment (JSON)', (t) => {
  const outputs = [
    { connector: 'HDMI-A-1', mode: 'preferred' },
    { connector: 'HDMI-A-2', mode: '1920x1080@60', enabled: false },
    { connector: 'DP-1', mode: '3840x2160', rotation: 90 },
  ];
  t.deepEqual(load(t, { env: { MULTIHEAD_OUTPUTS: JSON.stringify(outputs) } }).config.outputs, outputs);
  t.is(load(t, { env: { MULTIHEAD_OUTPUTS: 'auto' } }).config.outputs, 'auto');
});

const invalid: Array<{
  name: string;
  env?: Record<string, string>;
  file?: unknown;
  key: string;
  value?: unknown;
  rule: RegExp;
}> = [
  {
    name: 'port not a number',
    env: { MULTIHEAD_HTTP_PORT: 'http' },
    key: 'http.port',
    value: 'http',
    rule: /integer from 0 to 65535/,
  },
  {
    name: 'port out of range',
    file: { http: { port: 70000 } },
    key: 'http.port',
    value: 70000,
    rule: /integer from 0 to 65535/,
  },
  {
    name: 'port as a string in a file',
    file: { http: { port: '8080' } },
    key: 'http.port',
    value: '8080',
    rule: /integer/,
  },
  {
    name: 'log level',
    env: { MULTIHEAD_LOG_LEVEL: 'loud' },
    key: 'log.level',
    value: 'loud',
    rule: /one of fatal, error, warn, info, debug, trace, silent/,
  },
  {
    name: 'broker scheme',
    env: { MULTIHEAD_MQTT_URL: 'http://broker' },
    key: 'mqtt.url',
    value: 'http://broker',
    rule: /mqtt:\/\/, mqtts:\/\//,
  },
  {
    name: 'broker not a URL',
    env: { MULTIHEAD_MQTT_URL: 'broker:1883' },
    key: 'mqtt.url',
    value: 'broker:1883',
    rule: /broker URL/,
  },
  {
    name: 'device id with a slash',
    env: { MULTIHEAD_DEVICE_ID: 'a/b' },
    key: 'device.id',
    value: 'a/b',
    rule: /A-Z a-z 0-9 _ -/,
  },
  {
    name: 'device name with a wildcard',
    file: { device: { name: 'shop#1' } },
    key: 'device.name',
    value: 'shop#1',
    rule: /without \/ \+ #/,
  },
  {
    name: 'duplicate groups',
    env: { MULTIHEAD_DEVICE_GROUPS: 'a,a' },
    key: 'device.groups',
    value: ['a', 'a'],
    rule: /same group twice/,
  },
  {
    name: 'group not a list',
    file: { device: { groups: 'lobby' } },
    key: 'device.groups',
    value: 'lobby',
    rule: /list of distinct group names/,
  },
  {
    name: 'outputs garbage',
    env: { MULTIHEAD_OUTPUTS: 'all' },
    key: 'outputs',
    value: 'all',
    rule: /"auto" or a list/,
  },
  { name: 'outputs empty list', file: { outputs: [] }, key: 'outputs', value: [], rule: /"auto" or a list/ },
  {
    name: 'output mode',
    file: { outputs: [{ connector: 'HDMI-A-1', mode: 'big' }] },
    key: 'outputs',
    rule: /entry 0 \(HDMI-A-1\) has mode "big"/,
  },
  {
    name: 'output connector',
    file: { outputs: [{ connector: '', mode: 'preferred' }] },
    key: 'outputs',
    rule: /entry 0 needs a connector name/,
  },
  {
    name: 'output field',
    file: { outputs: [{ connector: 'DP-1', mode: 'preferred', rotate: 90 }] },
    key: 'outputs',
    rule: /unknown field "rotate"/,
  },
  {
    name: 'output rotation',
    file: { outputs: [{ connector: 'DP-1', mode: 'preferred', rotation: 45 }] },
    key: 'outputs',
    rule: /entry 0 \(DP-1\) "rotation" must be 0, 90, 180 or 270/,
  },
  {
    name: 'output cec',
    file: { outputs: [{ connector: 'HDMI-A-1', mode: 'preferred', cec: '/dev/video0' }] },
    key: 'outputs',
    rule: /entry 0 \(HDMI-A-1\) "cec" must be "auto", "off" or a CEC adapter such as "\/dev\/cec0"/,
  },
  {
    name: 'output cec taken twice',
    file: {
      outputs: [
        { connector: 'HDMI-A-1', mode: 'preferred', cec: '/dev/cec0' },
        { connector: 'HDMI-A-2', mode: 'preferred', cec: '/dev/cec0' },
      ],
    },
    key: 'outputs',
    rule: /entry 1 \(HDMI-A-2\) "cec": \/dev\/cec0 is already HDMI-A-1's/,
  },
  {
    name: 'output twice',
    file: {
      outputs: [
        { connector: 'DP-1', mode: 'preferred' },
        { connector: 'DP-1', mode: 'preferred' },
      ],
    },
    key: 'outputs',
    rule: /DP-1 is listed twice/,
  },
  {
    name: 'output enabled',
    file: { outputs: [{ connector: 'DP-1', mode: 'preferred', enabled: 'yes' }] },
    key: 'outputs',
    rule: /"enabled" must be true or false/,
  },
  {
    name: 'drm device',
    env: { MULTIHEAD_DISPLAY_DEVICE: '/dev/fb0' },
    key: 'display.device',
    value: '/dev/fb0',
    rule: /\/dev\/dri\/card0/,
  },
  {
    name: 'bind address',
    env: { MULTIHEAD_HTTP_BIND: 'not an address' },
    key: 'http.bind',
    value: 'not an address',
    rule: /IP address/,
  },
  {
    name: 'relative data dir',
    env: { MULTIHEAD_DATA_DIR: 'data' },
    key: 'dataDir',
    value: 'data',
    rule: /absolute path/,
  },
  {
    name: 'relative CA path',
    env: { MULTIHEAD_MQTT_CA: 'ca.pem' },
    key: 'mqtt.ca',
    value: 'ca.pem',
    rule: /absolute file path/,
  },
  {
    name: 'topic prefix wildcard',
    env: { MULTIHEAD_MQTT_PREFIX: 'fleet/+' },
    key: 'mqtt.prefix',
    value: 'fleet/+',
    rule: /without wildcards/,
  },
  {
    name: 'LED name with a slash',
    env: { MULTIHEAD_LED_NAMES: '../power' },
    key: 'led.names',
    value: ['../power'],
    rule: /LED names/,
  },
  {
    name: 'ring too small',
    env: { MULTIHEAD_LOG_RING_SIZE: '1' },
    key: 'log.ringSize',
    value: 1,
    rule: /from 10 to 100000/,
  },
  {
    name: 'username too long',
    file: { mqtt: { username: 'u'.repeat(5000) } },
    key: 'mqtt.username',
    rule: /at most 4096/,
  },
];

for (const c of invalid) {
  test(`invalid: ${c.name}`, (t) => {
    const dir = scratchDir(t);
    const path = c.file === undefined ? undefined : writeJson(dir, 'config.json', c.file);
    const error = loadError(t, { env: c.env ?? {}, path });
    const [problem] = error.problems;
    t.is(problem?.key, c.key);
    if ('value' in c) t.deepEqual(problem?.value, c.value);
    t.regex(problem?.rule ?? '', c.rule);
    t.is(problem?.source, c.env ? `environment ${Object.keys(c.env)[0]}` : path);
    // One line, naming the key, the value and the rule.
    t.false(error.message.includes('\n'));
    t.true(error.message.startsWith(`invalid config: ${c.key}`));
    t.regex(error.message, c.rule);
  });
}

test('a secret that fails validation is named but never printed', (t) => {
  const secret = `s3cret-${'x'.repeat(5000)}`;
  const error = loadError(t, { env: { MULTIHEAD_MQTT_PASSWORD: secret } });
  t.is(error.problems[0]?.key, 'mqtt.password');
  t.false('value' in (error.problems[0] ?? {}));
  t.false(error.message.includes('s3cret'));
});

test('several problems: the first in full, the rest listed by key', (t) => {
  const error = loadError(t, { env: { MULTIHEAD_HTTP_PORT: '-1', MULTIHEAD_LOG_LEVEL: 'x', MULTIHEAD_DATA_DIR: 'y' } });
  t.is(error.problems.length, 3);
  t.regex(
    error.message,
    /^invalid config: http\.port = -1 from environment MULTIHEAD_HTTP_PORT: .* \(and 2 more: dataDir, log\.level\)$/,
  );
});

test('unknown keys are rejected with a suggestion', (t) => {
  const dir = scratchDir(t);
  const path = writeJson(dir, 'config.json', { mqtt: { pasword: 'x' }, colour: 'blue' });
  const error = loadError(t, { path });
  t.deepEqual(
    error.problems.map((p) => [p.key, p.rule]),
    [
      ['mqtt.pasword', 'unknown key (did you mean "mqtt.password"?)'],
      ['colour', 'unknown key'],
    ],
  );
  t.false(error.message.includes('"x"'), 'the value of a misspelt secret key is not echoed');
});

test('a section given as a scalar names the keys it should hold', (t) => {
  const dir = scratchDir(t);
  const error = loadError(t, { path: writeJson(dir, 'config.json', { http: 8080 }) });
  t.is(error.problems[0]?.key, 'http');
  t.is(error.problems[0]?.rule, 'must be an object with keys bind, port, token, rateLimit.burst, rateLimit.perSecond');
});

test('file-level problems: missing explicit file, bad JSON, not an object', (t) => {
  const dir = scratchDir(t);
  const missing = loadError(t, { path: `${dir}/nope.json` });
  t.is(missing.message, `invalid config: ${dir}/nope.json: cannot read config file: file not found`);

  const broken = loadError(t, { path: writeJson(dir, 'broken.json', '{"http": {"port": 80,}}') });
  t.regex(broken.message, new RegExp(`^invalid config: ${dir}/broken\\.json: not valid JSON: .*position 21`));

  const array = loadError(t, { path: writeJson(dir, 'array.json', '[1,2]') });
  t.is(array.message, `invalid config: ${dir}/array.json = [1,2]: must be a JSON object of settings`);

  const desired = loadError(t, { desired: 'play everything' });
  t.is(desired.problems[0]?.source, 'MQTT desired state');
});

test('an empty config file means embedded defaults', (t) => {
  const dir = scratchDir(t);
  const { config, file } = load(t, { path: writeJson(dir, 'empty.json', '  \n') });
  t.is(file, `${dir}/empty.json`);
  t.is(config.http.port, 8780);
});

test('a present default file is read; an absent one is not an error', (t) => {
  const dir = scratchDir(t);
  const path = writeJson(dir, 'config.json', { http: { port: 4242 } });
  t.is(load(t, { defaultPath: path }).config.http.port, 4242);
  t.is(load(t, { defaultPath: `${dir}/absent.json` }).file, undefined);
});

test('useEnv: false judges the file alone', (t) => {
  const dir = scratchDir(t);
  const path = writeJson(dir, 'config.json', { http: { port: 1234 } });
  const { config } = load(t, { path, useEnv: false, env: { MULTIHEAD_HTTP_PORT: 'bad', MULTIHEAD_CONFIG: '/x' } });
  t.is(config.http.port, 1234);
});

test('masked() hides set secrets and leaves empty ones visible as empty', (t) => {
  const { masked } = load(t, { env: { MULTIHEAD_MQTT_PASSWORD: 'hunter2' } });
  const shown = masked() as { mqtt: { password: string }; http: { token: string } };
  t.is(shown.mqtt.password, '[redacted]');
  t.is(shown.http.token, '');
  t.false(JSON.stringify(shown).includes('hunter2'));
});

test('every setting is documented, has a unique MULTIHEAD_ env var, and its default passes its own rule', (t) => {
  const envs = new Set<string>();
  for (const [key, setting] of settingsFlat()) {
    t.true(setting.doc.length > 10, `${key} has a doc string`);
    t.regex(setting.env, /^MULTIHEAD_[A-Z0-9_]+$/, `${key} env var`);
    t.false(envs.has(setting.env), `${key} env var is unique`);
    envs.add(setting.env);
    t.notThrows(() => setting.format.validate(setting.default), `${key} default is valid`);
  }
});

test('docs/config.md is the generated schema reference', (t) => {
  const committed = readFileSync(new URL('../docs/config.md', import.meta.url), 'utf8');
  t.is(committed, schemaMarkdown(), 'run: bin/multihead config schema --format markdown > docs/config.md');
});

test('decode settings: sharing on by default, words accepted from the environment, bad values named', (t) => {
  t.like(load(t).config.decode, { shared: true, maxDecoders: 4 });
  t.like(load(t, { env: { MULTIHEAD_DECODE_SHARED: 'off', MULTIHEAD_DECODE_MAX_DECODERS: '2' } }).config.decode, {
    shared: false,
    maxDecoders: 2,
  });
  const shared = loadError(t, { env: { MULTIHEAD_DECODE_SHARED: 'maybe' } });
  t.regex(shared.message, /decode\.shared = "maybe" from environment MULTIHEAD_DECODE_SHARED: must be true or false/);
  const dir = scratchDir(t);
  const max = loadError(t, { path: writeJson(dir, 'c.json', { decode: { maxDecoders: 0 } }) });
  t.regex(max.message, /decode\.maxDecoders = 0 from .*c\.json: must be an integer from 1 to 64/);
});

test('device ids and group names the topic contract uses are refused (all, group, replies, in any case)', (t) => {
  for (const id of ['all', 'group', 'replies', 'Replies']) {
    const error = loadError(t, { env: { MULTIHEAD_DEVICE_ID: id } });
    t.is(error.problems[0]?.key, 'device.id');
    t.regex(
      error.message,
      new RegExp(`device\\.id = "${id}" .*must not be "${id}": not one of the contract's topic levels`),
    );
  }
  const groups = loadError(t, { env: { MULTIHEAD_DEVICE_GROUPS: 'lobby,all' } });
  t.is(groups.problems[0]?.key, 'device.groups');
  t.regex(groups.message, /must not name the group "all"/);
  // Names that merely contain a reserved word are ordinary ids.
  t.is(
    load(t, { env: { MULTIHEAD_DEVICE_ID: 'all-hands', MULTIHEAD_DEVICE_GROUPS: 'groups,replies-2' } }).config.device
      .id,
    'all-hands',
  );
});

test('mqtt.trialS: 300 s by default, 1 to 3600 allowed', (t) => {
  t.is(load(t).config.mqtt.trialS, 300);
  t.is(load(t, { env: { MULTIHEAD_MQTT_TRIAL_S: '5' } }).config.mqtt.trialS, 5);
  for (const bad of ['0', '3601', 'soon']) {
    t.is(loadError(t, { env: { MULTIHEAD_MQTT_TRIAL_S: bad } }).problems[0]?.key, 'mqtt.trialS', bad);
  }
});
