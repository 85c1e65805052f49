/** Limits on what the device accepts; beyond them a payload is refused before it is parsed. */
export const PAYLOAD_LIMITS = {
  /** A command request; the largest (playlist.set with 1000 items) fits well within it. */
  commandBytes: 256 * 1024,
  /** A desired configuration document. */
  desiredBytes: 256 * 1024,
  /**
   * The largest MQTT packet the device accepts (CONNECT Maximum Packet Size): room for the
   * largest payload plus topic and properties. The broker does not send anything bigger.
   */
  packetBytes: 300 * 1024,
  /** Nesting of objects and arrays; the contract's deepest payload is about 6. */
  depth: 32,
} as const;

export type PayloadResult = { ok: true; value: unknown } | { ok: false; code: string; message: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Turns an incoming MQTT payload into JSON data, or says in one coded line why not. An empty
 * payload is `{}` (a request without arguments), since `mosquitto_pub -n` sends nothing.
 */
export function payloadDecode(payload: Uint8Array, maxBytes: number): PayloadResult {
  if (payload.length > maxBytes) {
    return {
      ok: false,
      code: 'ERR_PAYLOAD_TOO_LARGE',
      message: `payload is ${payload.length} bytes; the limit is ${maxBytes}`,
    };
  }
  if (payload.length === 0) return { ok: true, value: {} };
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return { ok: false, code: 'ERR_BAD_ENCODING', message: 'payload is not valid UTF-8' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, code: 'ERR_BAD_JSON', message: `payload is not JSON: ${(error as Error).message}` };
  }
  if (depthExceeds(value, PAYLOAD_LIMITS.depth)) {
    return {
      ok: false,
      code: 'ERR_TOO_DEEP',
      message: `payload nests deeper than ${PAYLOAD_LIMITS.depth} levels`,
    };
  }
  return { ok: true, value };
}

/** Iterative, so a hostile payload cannot exhaust the stack of the checker itself. */
function depthExceeds(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (node === null || typeof node !== 'object') continue;
    if (depth >= limit) return true;
    for (const child of Object.values(node)) stack.push([child, depth + 1]);
  }
  return false;
}
