import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';

/**
 * Value checks shared by the schema. Each throws an Error whose message says what is
 * allowed ("must be ..."), so a config error can name key, value and rule in one line.
 * Coercion turns the strings that environment variables carry into typed values.
 */
export interface Format {
  readonly name: string;
  /** What is allowed, in words; documented in the schema and quoted in errors. */
  readonly rule: string;
  readonly validate: (value: unknown) => void;
  readonly coerce?: (raw: string) => unknown;
}

function fail(rule: string): never {
  throw new Error(rule);
}

const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/**
 * Topic levels the MQTT contract uses directly under the prefix (docs/mqtt.md). A device or
 * group of that name would share topics with every device (`all`), the groups (`group`) or the
 * replies tree (`replies`), and could read or forge what is meant for others. Compared without
 * case, so a look-alike cannot slip past a case-insensitive reader (dashboards, ACL reviews).
 */
export const RESERVED_NAMES = ['all', 'group', 'replies'] as const;
const reserved = (name: string): boolean => (RESERVED_NAMES as readonly string[]).includes(name.toLowerCase());
const RESERVED_RULE = `not one of the contract's topic levels (${RESERVED_NAMES.join(', ')})`;
/** MQTT topic levels must not contain wildcards or separators, and names reach the screen. */
const TOPIC_SAFE = /^[^/+#\p{Cc}]{1,64}$/u;
const CONNECTOR = /^[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*$/;
const MODE = /^(preferred|\d{2,5}x\d{2,5}(@\d{1,3}(\.\d{1,3})?)?)$/;
const HOSTNAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const LED_NAME = /^[A-Za-z0-9_:.+-]{1,64}$/;
const MQTT_PROTOCOLS = ['mqtt:', 'mqtts:', 'ws:', 'wss:'];

function parseJsonOr(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function splitList(raw: string): unknown {
  const trimmed = raw.trim();
  if (trimmed.startsWith('[')) return parseJsonOr(trimmed);
  return trimmed === '' ? [] : trimmed.split(',').map((item) => item.trim());
}

export const deviceId: Format = {
  name: 'device-id',
  rule: `must be empty (derive from /etc/machine-id) or 1-64 of A-Z a-z 0-9 _ - starting with a letter or digit, ${RESERVED_RULE}`,
  validate(value) {
    if (value === '') return;
    if (typeof value !== 'string' || !DEVICE_ID.test(value)) fail(deviceId.rule);
    if (reserved(value)) fail(`must not be "${value}": ${RESERVED_RULE}`);
  },
};

export const displayName: Format = {
  name: 'display-name',
  rule: 'must be empty (use the hostname) or 1-64 printable characters without / + #',
  validate(value) {
    if (value === '') return;
    if (typeof value !== 'string' || !TOPIC_SAFE.test(value)) fail(displayName.rule);
  },
};

export const groupList: Format = {
  name: 'group-list',
  rule: `must be a list of distinct group names, each 1-64 of A-Z a-z 0-9 _ - and ${RESERVED_RULE} (comma-separated in the environment)`,
  coerce: splitList,
  validate(value) {
    if (!Array.isArray(value) || !value.every((g) => typeof g === 'string' && DEVICE_ID.test(g))) fail(groupList.rule);
    const taken = value.find((g) => reserved(g as string));
    if (taken !== undefined) fail(`must not name the group "${taken}": ${RESERVED_RULE}`);
    if (new Set(value).size !== value.length) fail('must not name the same group twice');
  },
};

export interface OutputSetting {
  connector: string;
  mode: string;
  enabled?: boolean;
  /** Degrees the picture is turned clockwise on this screen (portrait mounting); content may override. */
  rotation?: 0 | 90 | 180 | 270;
  /** The HDMI-CEC adapter that reaches this screen's TV: "auto" (default), "off" or a /dev/cecN path. */
  cec?: string;
}

/** `outputs[].cec`: "auto", "off" or a kernel CEC adapter node. */
export const CEC_SETTING = /^(auto|off|\/dev\/cec\d+)$/;

/** `auto` drives every connected connector at its preferred mode; a list pins connectors and modes. */
export const outputs: Format = {
  name: 'outputs',
  rule: 'must be "auto" or a list of {"connector": "HDMI-A-1", "mode": "preferred" | "WxH" | "WxH@Hz", "enabled": true|false, "rotation": 0|90|180|270, "cec": "auto"|"off"|"/dev/cecN"}',
  coerce: (raw) => (raw.trim() === 'auto' ? 'auto' : parseJsonOr(raw)),
  validate(value) {
    if (value === 'auto') return;
    const rule = outputs.rule;
    if (!Array.isArray(value) || value.length === 0) fail(rule);
    const seen = new Set<string>();
    const cecTaken = new Map<string, string>();
    for (const [i, item] of value.entries()) {
      if (typeof item !== 'object' || item === null || Array.isArray(item))
        fail(`${rule}; entry ${i} is not an object`);
      const { connector, mode, enabled, rotation, cec, ...rest } = item as Record<string, unknown>;
      const extra = Object.keys(rest);
      if (extra.length > 0) fail(`${rule}; entry ${i} has unknown field "${extra[0]}"`);
      if (typeof connector !== 'string' || !CONNECTOR.test(connector)) {
        fail(`${rule}; entry ${i} needs a connector name such as "HDMI-A-1"`);
      }
      if (typeof mode !== 'string' || !MODE.test(mode)) {
        fail(`${rule}; entry ${i} (${connector}) has mode ${JSON.stringify(mode)}`);
      }
      if (enabled !== undefined && typeof enabled !== 'boolean')
        fail(`${rule}; entry ${i} (${connector}) "enabled" must be true or false`);
      if (rotation !== undefined && ![0, 90, 180, 270].includes(rotation as number))
        fail(`${rule}; entry ${i} (${connector}) "rotation" must be 0, 90, 180 or 270`);
      if (cec !== undefined && (typeof cec !== 'string' || !CEC_SETTING.test(cec)))
        fail(`${rule}; entry ${i} (${connector}) "cec" must be "auto", "off" or a CEC adapter such as "/dev/cec0"`);
      if (typeof cec === 'string' && cec.startsWith('/dev/')) {
        const other = cecTaken.get(cec);
        if (other !== undefined) fail(`${rule}; entry ${i} (${connector}) "cec": ${cec} is already ${other}'s`);
        cecTaken.set(cec, connector);
      }
      if (seen.has(connector)) fail(`${rule}; connector ${connector} is listed twice`);
      seen.add(connector);
    }
  },
};

export const drmDevice: Format = {
  name: 'drm-device',
  rule: 'must be "auto" (first card with a connected display) or a path such as /dev/dri/card0',
  validate(value) {
    if (value === 'auto') return;
    if (typeof value !== 'string' || !/^\/dev\/dri\/card\d+$/.test(value)) fail(drmDevice.rule);
  },
};

export const mqttUrl: Format = {
  name: 'mqtt-url',
  rule: 'must be empty (MQTT off) or a broker URL: mqtt://, mqtts://, ws:// or wss:// with a host',
  validate(value) {
    if (value === '') return;
    const rule = mqttUrl.rule;
    if (typeof value !== 'string') fail(rule);
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      fail(rule);
    }
    if (!MQTT_PROTOCOLS.includes(url.protocol) || url.hostname === '') fail(rule);
  },
};

export const text: Format = {
  name: 'text',
  rule: 'must be a string of at most 4096 characters',
  validate(value) {
    if (typeof value !== 'string' || value.length > 4096) fail(text.rule);
  },
};

/** The status endpoint's LAN token: short ones can be guessed through the rate limit in days. */
export const HTTP_TOKEN_MIN = 32;
export const httpToken: Format = {
  name: 'http-token',
  rule: `must be empty (loopback only) or at least ${HTTP_TOKEN_MIN} characters (e.g. openssl rand -hex 32), at most 4096, without spaces`,
  validate(value) {
    if (typeof value !== 'string' || value.length > 4096 || /\s/.test(value)) fail(httpToken.rule);
    if (value !== '' && value.length < HTTP_TOKEN_MIN) fail(httpToken.rule);
  },
};

export const topicPrefix: Format = {
  name: 'topic-prefix',
  rule: 'must be topic levels of A-Z a-z 0-9 _ - separated by /, without wildcards or a leading or trailing /',
  validate(value) {
    if (typeof value !== 'string' || !/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/.test(value) || value.length > 128) {
      fail(topicPrefix.rule);
    }
  },
};

export const optionalAbsolutePath: Format = {
  name: 'optional-absolute-path',
  rule: 'must be empty or an absolute file path',
  validate(value) {
    if (value === '') return;
    if (typeof value !== 'string' || !isAbsolute(value) || value.includes('\0')) fail(optionalAbsolutePath.rule);
  },
};

export const absolutePath: Format = {
  name: 'absolute-path',
  rule: 'must be an absolute path',
  validate(value) {
    if (typeof value !== 'string' || !isAbsolute(value) || value.includes('\0')) fail(absolutePath.rule);
  },
};

export const bindAddress: Format = {
  name: 'bind-address',
  rule: 'must be an IP address (127.0.0.1 loopback only, 0.0.0.0 or :: for the LAN) or a hostname',
  validate(value) {
    if (typeof value !== 'string' || (isIP(value) === 0 && !HOSTNAME.test(value))) fail(bindAddress.rule);
  },
};

function integerIn(name: string, min: number, max: number): Format {
  const rule = `must be an integer from ${min} to ${max}`;
  return {
    name,
    rule,
    coerce: (raw) => (/^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw),
    validate(value) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(rule);
    },
  };
}

export const port = integerIn('tcp-port', 0, 65535);
export const decoderCount = integerIn('decoder-count', 1, 64);
export const intervalSeconds = integerIn('interval-seconds', 1, 86_400);
export const trialSeconds = integerIn('trial-seconds', 1, 3600);
export const byteCount = integerIn('byte-count', 1024 * 1024, 2 ** 44);
export const downloadCount = integerIn('download-count', 1, 16);
export const bytesPerSecond = integerIn('bytes-per-second', 0, 2 ** 40);

/** true/false, or in the environment also 1/0, yes/no, on/off. */
export const flag: Format = {
  name: 'flag',
  rule: 'must be true or false',
  coerce: (raw) => {
    const text = raw.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(text)) return true;
    if (['false', '0', 'no', 'off'].includes(text)) return false;
    return raw;
  },
  validate(value) {
    if (typeof value !== 'boolean') fail(flag.rule);
  },
};
export const ringSize = integerIn('ring-size', 10, 100_000);
export const previewInterval = integerIn('preview-interval', 0, 3600);
export const previewWidth = integerIn('preview-width', 64, 1920);
export const requestBurst = integerIn('request-burst', 1, 10_000);
export const requestRate = integerIn('request-rate', 1, 10_000);

export const vaapiDevice: Format = {
  name: 'vaapi-device',
  rule: 'must be "auto" (the KMS device\'s render node) or a path such as /dev/dri/renderD128',
  validate(value) {
    if (value === 'auto') return;
    if (typeof value !== 'string' || !/^\/dev\/dri\/renderD\d+$/.test(value)) fail(vaapiDevice.rule);
  },
};

export const ledNames: Format = {
  name: 'led-names',
  rule: 'must be a list of LED names as found in /sys/class/leds, e.g. ["led0"] (comma-separated in the environment)',
  coerce: splitList,
  validate(value) {
    if (
      !Array.isArray(value) ||
      !value.every((n) => typeof n === 'string' && LED_NAME.test(n) && n !== '.' && n !== '..')
    ) {
      fail(ledNames.rule);
    }
  },
};

export function oneOf(name: string, allowed: readonly string[]): Format {
  const rule = `must be one of ${allowed.join(', ')}`;
  return {
    name,
    rule,
    validate(value) {
      if (typeof value !== 'string' || !allowed.includes(value)) fail(rule);
    },
  };
}
