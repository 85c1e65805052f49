/**
 * Secret scrubbing for everything the supervisor logs. It runs on the final JSON line,
 * after pino has merged message, bindings and error, so no call site can bypass it.
 */

export const REDACTED = '[redacted]';

/** Keys whose values are secrets wherever they appear, at any depth. */
const SECRET_KEY =
  /^(pass(word|wd|phrase)?|secret|client_?secret|token|access_?token|refresh_?token|id_?token|api_?key|private_?key|credentials?|authorization|cookie|set-cookie|psk)$/i;

const SCRUBBERS: ReadonlyArray<[RegExp, string]> = [
  // Userinfo in any URL: mqtts://user:pass@broker, https://token@host. The user name can be a token too.
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@"'<>]+@/gi, `$1${REDACTED}@`],
  // PEM private keys, complete or cut off.
  [/-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(-----END \1PRIVATE KEY-----|$)/g, `[redacted private key]`],
  // HTTP authorization schemes written into messages.
  [/\b(Bearer|Basic|Digest)\s+[A-Za-z0-9._~+/=-]{6,}/g, `$1 ${REDACTED}`],
  // Secrets passed as query parameters.
  [/([?&](?:password|passwd|token|access_token|api_key|apikey|secret|sig|signature)=)[^&\s#"']*/gi, `$1${REDACTED}`],
];

export function scrubText(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SCRUBBERS) out = out.replace(pattern, replacement);
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
