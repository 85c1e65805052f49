import * as f from './formats.ts';

/** One documented configuration key. Every key has a default, a format, an env var and a doc. */
export interface Setting<T = unknown> {
  readonly doc: string;
  readonly format: f.Format;
  readonly default: T;
  readonly env: string;
  /** Never printed: masked in `config show`, in error messages and in logs. */
  readonly sensitive?: boolean;
}

export interface SettingTree {
  readonly [key: string]: Setting | SettingTree;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULT_CONFIG_PATH = '/etc/multihead/config.json';
export const CONFIG_PATH_ENV = 'MULTIHEAD_CONFIG';

/**
 * The single source of truth for configuration. Layers, lowest first: these defaults,
 * the config file, environment variables, then the fleet's MQTT desired state.
 */
export const schema = {
  device: {
    id: {
      doc: 'Stable device identifier used in MQTT topics. Empty derives "mh-" plus 12 hex digits of /etc/machine-id.',
      format: f.deviceId,
      default: '',
      env: 'MULTIHEAD_DEVICE_ID',
    },
    name: {
      doc: 'Human-readable name shown on slates, the status page and fleet dashboards. Empty uses the hostname.',
      format: f.displayName,
      default: '',
      env: 'MULTIHEAD_DEVICE_NAME',
    },
    groups: {
      doc: 'Fleet groups this device answers to on <prefix>/group/<group>/cmd/...',
      format: f.groupList,
      default: [] as string[],
      env: 'MULTIHEAD_DEVICE_GROUPS',
    },
  },
  display: {
    device: {
      doc: 'KMS device to drive: "auto" picks the first card with a connected connector.',
      format: f.drmDevice,
      default: 'auto',
      env: 'MULTIHEAD_DISPLAY_DEVICE',
    },
  },
  outputs: {
    doc: 'Which connectors to drive. "auto": every connected connector at its preferred mode. Or a list such as [{"connector": "HDMI-A-1", "mode": "1920x1080@60", "rotation": 90}] (JSON in the environment). "rotation": degrees the picture is turned clockwise on a screen mounted portrait or upside down (0 default; content may set its own, docs/content.md). "cec": the HDMI-CEC adapter that reaches this screen\'s TV for display power (docs/kms.md): "auto" (default: the adapter whose connector info names this connector, else the only adapter when one output is left to take it), "off", or a path such as "/dev/cec0".',
    format: f.outputs,
    default: 'auto' as 'auto' | f.OutputSetting[],
    env: 'MULTIHEAD_OUTPUTS',
  },
  mqtt: {
    url: {
      doc: 'Fleet broker URL (mqtt://, mqtts://, ws://, wss://). Empty keeps MQTT off.',
      format: f.mqttUrl,
      default: '',
      env: 'MULTIHEAD_MQTT_URL',
    },
    username: {
      doc: 'Broker user name.',
      format: f.text,
      default: '',
      env: 'MULTIHEAD_MQTT_USERNAME',
    },
    password: {
      doc: 'Broker password.',
      format: f.text,
      default: '',
      env: 'MULTIHEAD_MQTT_PASSWORD',
      sensitive: true,
    },
    prefix: {
      doc: 'Topic root; the device lives under <prefix>/<device.id>/.',
      format: f.topicPrefix,
      default: 'multihead',
      env: 'MULTIHEAD_MQTT_PREFIX',
    },
    ca: {
      doc: 'PEM file of the CA that signs the broker certificate (mqtts/wss). Empty trusts the system store.',
      format: f.optionalAbsolutePath,
      default: '',
      env: 'MULTIHEAD_MQTT_CA',
    },
    cert: {
      doc: 'PEM client certificate file for mutual TLS.',
      format: f.optionalAbsolutePath,
      default: '',
      env: 'MULTIHEAD_MQTT_CERT',
    },
    key: {
      doc: 'PEM private key file for the client certificate.',
      format: f.optionalAbsolutePath,
      default: '',
      env: 'MULTIHEAD_MQTT_KEY',
    },
    telemetryIntervalS: {
      doc: 'Seconds between telemetry messages on <prefix>/<device.id>/telemetry. Applies at once when changed over MQTT.',
      format: f.intervalSeconds,
      default: 60,
      env: 'MULTIHEAD_MQTT_TELEMETRY_INTERVAL_S',
    },
    trialS: {
      doc: 'Seconds a desired config that changes how the box reaches the broker (mqtt.url, mqtt.username, mqtt.password, mqtt.ca, mqtt.cert, mqtt.key, mqtt.prefix, device.id) has to connect (CONNACK) before the box rolls back to the last good one and reports ERR_ROLLED_BACK. Taken from the last good config, never from the config on trial.',
      format: f.trialSeconds,
      default: 300,
      env: 'MULTIHEAD_MQTT_TRIAL_S',
    },
  },
  http: {
    bind: {
      doc: 'Address of the local status endpoint. Loopback by default; 0.0.0.0 or :: opens it to the LAN (then http.token is required).',
      format: f.bindAddress,
      default: '127.0.0.1',
      env: 'MULTIHEAD_HTTP_BIND',
    },
    port: {
      doc: 'TCP port of the local status endpoint (0 picks a free port).',
      format: f.port,
      default: 8780,
      env: 'MULTIHEAD_HTTP_PORT',
    },
    token: {
      doc: 'Bearer token required for non-loopback access to the status endpoint.',
      format: f.httpToken,
      default: '',
      env: 'MULTIHEAD_HTTP_TOKEN',
      sensitive: true,
    },
    rateLimit: {
      burst: {
        doc: 'Requests one client address may make at once before the status endpoint answers 429.',
        format: f.requestBurst,
        default: 60,
        env: 'MULTIHEAD_HTTP_RATE_LIMIT_BURST',
      },
      perSecond: {
        doc: 'Requests per second one client address may make after its burst.',
        format: f.requestRate,
        default: 20,
        env: 'MULTIHEAD_HTTP_RATE_LIMIT_PER_SECOND',
      },
    },
  },
  led: {
    names: {
      doc: 'Status LEDs under led.sysfsPath that show the device state. Empty: no LED.',
      format: f.ledNames,
      default: [] as string[],
      env: 'MULTIHEAD_LED_NAMES',
    },
    sysfsPath: {
      doc: 'Base directory of the Linux LED class.',
      format: f.absolutePath,
      default: '/sys/class/leds',
      env: 'MULTIHEAD_LED_SYSFS_PATH',
    },
  },
  decode: {
    shared: {
      doc: 'One decoder per source for every output showing it (the shared-decode RFC). Off: each output decodes for itself.',
      format: f.flag,
      default: true,
      env: 'MULTIHEAD_DECODE_SHARED',
    },
    maxDecoders: {
      doc: 'Most decoders running at once; a request for another is refused with ERR_DECODE_LIMIT and reported.',
      format: f.decoderCount,
      default: 4,
      env: 'MULTIHEAD_DECODE_MAX_DECODERS',
    },
    hardware: {
      doc: '"auto": VAAPI on the render node of the KMS device when the stream and driver allow it, else software (said once per decoder). "software": never the GPU.',
      format: f.oneOf('hardware-mode', ['auto', 'software']),
      default: 'auto' as 'auto' | 'software',
      env: 'MULTIHEAD_DECODE_HARDWARE',
    },
    vaapiDevice: {
      doc: 'Render node VAAPI decodes on. "auto": the one belonging to the KMS device driven, else the first /dev/dri/renderD*.',
      format: f.vaapiDevice,
      default: 'auto',
      env: 'MULTIHEAD_DECODE_VAAPI_DEVICE',
    },
  },
  playback: {
    demo: {
      doc: 'Play the built-in moving test card on every output while no content is assigned (for checking outputs). Off: those outputs show the installer screen (device, addresses, broker, firmware, modes, a QR code of the status page).',
      format: f.flag,
      default: false,
      env: 'MULTIHEAD_PLAYBACK_DEMO',
    },
  },
  preview: {
    intervalS: {
      doc: 'Seconds between JPEG previews of each output (status page, MQTT status); 0 turns previews off.',
      format: f.previewInterval,
      default: 5,
      env: 'MULTIHEAD_PREVIEW_INTERVAL_S',
    },
    width: {
      doc: 'Width of preview JPEGs in pixels; the height follows the output.',
      format: f.previewWidth,
      default: 320,
      env: 'MULTIHEAD_PREVIEW_WIDTH',
    },
  },
  dataDir: {
    doc: 'Writable directory for media cache, state and logs (the data partition on the appliance).',
    format: f.absolutePath,
    default: '/var/lib/multihead',
    env: 'MULTIHEAD_DATA_DIR',
  },
  content: {
    file: {
      doc: 'The content document (media, playlists, schedules, output assignment; docs/content.md). Empty: content.json in dataDir.',
      format: f.optionalAbsolutePath,
      default: '',
      env: 'MULTIHEAD_CONTENT_FILE',
    },
  },
  cache: {
    maxBytes: {
      doc: 'Most bytes of media kept in the cache under dataDir; least recently used media not needed now or next is evicted first.',
      format: f.byteCount,
      default: 4 * 1024 ** 3,
      env: 'MULTIHEAD_CACHE_MAX_BYTES',
    },
    reserveBytes: {
      doc: 'Bytes the media cache always leaves free on the data partition, so config, content and state writes still succeed: the cache is capped at the smaller of maxBytes and free space minus this.',
      format: f.byteCount,
      default: 128 * 1024 ** 2,
      env: 'MULTIHEAD_CACHE_RESERVE_BYTES',
    },
    concurrency: {
      doc: 'Media downloads running at once.',
      format: f.downloadCount,
      default: 2,
      env: 'MULTIHEAD_CACHE_CONCURRENCY',
    },
  },
  update: {
    keyring: {
      doc: 'OpenPGP public keyring (gpg --export) whose keys may sign firmware updates (SHA256SUMS.gpg); the image bakes it. Not settable over MQTT.',
      format: f.absolutePath,
      default: '/usr/lib/multihead/update-keyring.pgp',
      env: 'MULTIHEAD_UPDATE_KEYRING',
    },
    maxBytesPerSecond: {
      doc: 'Bandwidth limit of firmware downloads in bytes per second; 0 is unlimited.',
      format: f.bytesPerSecond,
      default: 0,
      env: 'MULTIHEAD_UPDATE_MAX_BYTES_PER_SECOND',
    },
    brokerWaitS: {
      doc: 'Seconds the boot health marker (/run/multihead/boot-healthy) waits for the broker once video shows; after that a box whose network is down still boots good.',
      format: f.intervalSeconds,
      default: 120,
      env: 'MULTIHEAD_UPDATE_BROKER_WAIT_S',
    },
  },
  log: {
    level: {
      doc: 'Lowest level written to the journal and kept in the in-memory ring.',
      format: f.oneOf('log-level', LOG_LEVELS),
      default: 'info' as LogLevel,
      env: 'MULTIHEAD_LOG_LEVEL',
    },
    ringSize: {
      doc: 'Recent log lines kept in memory for logs.get over MQTT and /logs over HTTP.',
      format: f.ringSize,
      default: 1000,
      env: 'MULTIHEAD_LOG_RING_SIZE',
    },
  },
} satisfies SettingTree;

type ValuesOf<T> = T extends Setting<infer V> ? V : { -readonly [K in keyof T]: ValuesOf<T[K]> };

/** The typed, validated configuration the supervisor runs with. */
export type Config = ValuesOf<typeof schema>;

export function isSetting(node: Setting | SettingTree): node is Setting {
  return typeof (node as Setting).doc === 'string' && 'format' in node;
}

/** Every leaf key in schema order, as dotted paths ("mqtt.url"). */
export function settingsFlat(tree: SettingTree = schema, prefix = ''): Array<[string, Setting]> {
  return Object.entries(tree).flatMap(([name, node]) => {
    const key = prefix + name;
    return isSetting(node) ? [[key, node] as [string, Setting]] : settingsFlat(node, `${key}.`);
  });
}
