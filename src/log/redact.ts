/**
 * Secret scrubbing for everything the supervisor says to the outside: log lines (on the final
 * JSON line, after pino has merged message, bindings and error, so no call site can bypass it),
 * every MQTT message (status, telemetry, events, replies) and every HTTP answer. One set of rules,
 * so a secret cannot be masked on one path and leak on another.
 */

export const REDACTED = '[redacted]';

/** Keys whose values are secrets wherever they appear, at any depth. */
const SECRET_KEY =
  /^(pass(word|wd|phrase)?|secret|client_?secret|token|access_?token|refresh_?token|id_?token|api_?key|private_?key|credentials?|authorization|cookie|set-cookie|psk)$/i;

/**
 * A query key that names a secret anywhere in it: `sig`, `X-Amz-Signature`, `X-Amz-Security-Token`,
 * `X-Goog-Credential`, `api_key`, `client_secret`, `password`. Masking a harmless key that merely
 * contains one of these words (`X-Amz-SignedHeaders`) only costs a little diagnosis.
 */
const SECRET_QUERY_WORD = /sig|token|credential|key|secret|pass(?:word|wd)?|auth/i;

/** A query separator, also percent-encoded (a URL inside another URL's query). */
const QUERY_PARAM = /([?&;]|%3[fF]|%26)([^=&?#\s"'<>\\]{1,200})(=|%3[dD])((?:(?!%26)[^&#\s"'<>\\])*)/g;

const SCRUBBERS: ReadonlyArray<[RegExp, string | typeof queryParamScrub]> = [
  // Userinfo in any URL: mqtts://user:pass@broker, https://token@host. The user name can be a token too.
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@"'<>]+@/gi, `$1${REDACTED}@`],
  // The same with the separators percent-encoded (a URL passed as a parameter).
  [
    /\b([a-z][a-z0-9+.-]*%3[aA]%2[fF]%2[fF])[^\s/?#@"'<>%]*(?:%(?!40)[0-9a-fA-F]{2}[^\s/?#@"'<>%]*)*%40/g,
    `$1${REDACTED}%40`,
  ],
  // PEM private keys, complete or cut off.
  [/-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(-----END \1PRIVATE KEY-----|$)/g, `[redacted private key]`],
  // HTTP authorization schemes written into messages.
  [/\b(Bearer|Basic|Digest)\s+[A-Za-z0-9._~+/=-]{6,}/g, `$1 ${REDACTED}`],
  // Secrets passed as query parameters (pre-signed S3 and GCS URLs, tokens, passwords).
  [QUERY_PARAM, queryParamScrub],
];

/** Masks a secret parameter's value; a harmless one's value may hold an encoded URL with secrets of its own. */
function queryParamScrub(_whole: string, separator: string, key: string, equals: string, value: string): string {
  if (value === '') return `${separator}${key}${equals}`;
  if (SECRET_QUERY_WORD.test(decodeKey(key))) return `${separator}${key}${equals}${REDACTED}`;
  return `${separator}${key}${equals}${value.replace(QUERY_PARAM, queryParamScrub)}`;
}

function decodeKey(key: string): string {
  try {
    return decodeURIComponent(key);
  } catch {
    return key;
  }
}

export function scrubText(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SCRUBBERS) {
    out = out.replace(pattern, replacement as (substring: string, ...args: string[]) => string);
  }
  return out;
}

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/** A copy of `value` with secret keys masked and every string scrubbed. Input is JSON data. */
export function redactValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 32) return '[too deep]';
  if (Array.isArray(value)) return value.map((item) => redactValue(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    out[key] = isSecretKey(key) && item !== '' && item !== null ? REDACTED : redactValue(item, depth + 1);
  }
  return out;
}

/**
 * The redaction of a message body as sent (an MQTT payload, an HTTP body): JSON is parsed and
 * redacted by key and value, anything else is scrubbed as text. Empty stays empty (an MQTT
 * retained-message clear).
 */
export function redactText(text: string): string {
  if (text === '') return text;
  try {
    return JSON.stringify(redactValue(JSON.parse(text)));
  } catch {
    return scrubText(text);
  }
}
