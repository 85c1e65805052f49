import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (how a dual-stack socket reports IPv4 peers). */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return address === '::1';
}

/** A bind address that no other machine can reach. Hostnames other than localhost count as LAN. */
export function isLoopbackBind(bind: string): boolean {
  return bind === 'localhost' || isLoopbackAddress(bind);
}

/**
 * Compares a presented token with the configured one in constant time. Both are hashed first so
 * the comparison always runs on equal-length digests and the token's length does not leak.
 */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (expected === '' || given === undefined) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/**
 * The token a request presents: `Authorization: Bearer <token>`, or `?token=` for what a browser
 * cannot send headers with (images, EventSource) once the page itself was opened with one.
 */
export function requestToken(request: IncomingMessage, url: URL): string | undefined {
  const header = request.headers.authorization;
  const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1] ?? url.searchParams.get('token') ?? undefined;
}
