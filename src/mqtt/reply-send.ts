import type { ReplyPayload, ReplyTarget } from './command-router.ts';
import type { PublishOptions } from './connection.ts';

/** The reply as JSON; a result that cannot be encoded still answers, as an ERR_INTERNAL reply. */
export function replyEncode(body: ReplyPayload): string {
  try {
    return JSON.stringify(body);
  } catch (error) {
    return JSON.stringify({
      ...(body.id !== undefined ? { id: body.id } : {}),
      device: body.device,
      command: body.command,
      ok: false,
      error: { code: 'ERR_INTERNAL', message: `reply could not be encoded: ${(error as Error).message}` },
    });
  }
}

/**
 * How a reply to `target` is published at `now`, or undefined once the request has expired: a
 * reply outlives its request by nothing, so it carries what is left of the request's expiry.
 */
export function replyOptions(target: ReplyTarget, now: number): PublishOptions | undefined {
  const leftS = target.expiresAt === undefined ? undefined : Math.ceil((target.expiresAt - now) / 1000);
  if (leftS !== undefined && leftS <= 0) return undefined;
  const properties = {
    ...(target.correlationData ? { correlationData: target.correlationData } : {}),
    ...(leftS !== undefined ? { messageExpiryInterval: leftS } : {}),
  };
  return { qos: 1, properties };
}
