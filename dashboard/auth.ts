/**
 * Token rules of the dashboard server.
 *
 * - Viewing (the page, its assets, `/stream`, images, status) needs no token from a loopback
 *   address and needs the session token from any other address (or always, with
 *   `requireTokenForViewing`).
 * - Input and control (`/api/control/*`, feedback input messages) always need the token.
 *
 * The token is read from the `token` query parameter, an `Authorization: Bearer` header or,
 * for viewing only, the `mindeye_token` cookie that the page URL with `?token=` sets (so that
 * the page's own assets load from a remote browser). The cookie is not accepted for control,
 * so another site cannot drive the session through a visitor's browser.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const TOKEN_COOKIE = 'mindeye_token';

export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

export function tokensEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface TokenSources {
  query?: string;
  bearer?: string;
  cookie?: string;
}

export function tokenSources(request: IncomingMessage, allowCookie: boolean): TokenSources {
  const url = new URL(request.url ?? '/', 'http://localhost');
  const sources: TokenSources = {};
  const query = url.searchParams.get('token');
  if (query !== null) sources.query = query;
  const authorization = request.headers.authorization;
  if (authorization !== undefined && /^Bearer\s+/i.test(authorization)) sources.bearer = authorization.replace(/^Bearer\s+/i, '').trim();
  if (allowCookie) {
    const cookie = parseCookie(request.headers.cookie ?? '', TOKEN_COOKIE);
    if (cookie !== undefined) sources.cookie = cookie;
  }
  return sources;
}

export type TokenCheck = { ok: true; tokenPresent: boolean } | { ok: false; status: 401 | 403; reason: string };

/**
 * Checks the token of a request. `needed` false lets a request without any token through,
 * but a wrong token is always rejected, so that a typo is reported instead of ignored.
 */
export function checkToken(sources: TokenSources, expected: string, needed: boolean, requestDescription: string): TokenCheck {
  const givenToken = sources.bearer ?? sources.query ?? sources.cookie;
  if (givenToken === undefined || givenToken === '') {
    if (!needed) return { ok: true, tokenPresent: false };
    return {
      ok: false,
      status: 401,
      reason: `${requestDescription} needs the session token, and none was given: add ?token=TOKEN to the URL or send "Authorization: Bearer TOKEN" (the token is in the URL that mindeye-rt prints at start, or the one passed with --token)`,
    };
  }
  if (!tokensEqual(givenToken, expected)) {
    return {
      ok: false,
      status: 403,
      reason: `${requestDescription}: the session token given is wrong: use the token from the URL that mindeye-rt printed at start of this session (tokens change each session unless --token sets one)`,
    };
  }
  return { ok: true, tokenPresent: true };
}

function parseCookie(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}
