// Bearer tokens of the client and admin APIs (security.client_token, security.admin_token).

import { createHash, timingSafeEqual } from "node:crypto";

/**
 * bearerToken is the token of an "Authorization: Bearer TOKEN" header (any case of Bearer),
 * or undefined when the header is absent or of another scheme.
 */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization === undefined ? null : /^Bearer +(\S+) *$/i.exec(authorization);
  return match === null ? undefined : match[1] as string;
}

/**
 * tokensEqual compares in time independent of where, or whether, the tokens differ: both
 * sides are hashed to 32 bytes first, so neither the comparison nor its length leaks how
 * much of a guess was right.
 */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}
