// Admission to the peer port: whether a new connection may start a handshake. Pure.
//
// Anyone who can connect gets a pending handshake (a Challenge, helloTimeoutMs to answer
// it), so pending handshakes are bounded per source address (inboundPendingPerHostMax)
// and, for addresses that are not a configured member's, in all (inboundPendingMax). A
// member's resolved address is judged by the first bound only: a flood of strangers from
// many addresses cannot take the slots a member needs to link.

import { inboundPendingMax, inboundPendingPerHostMax } from "./limits.ts";

/** PendingHandshakes counts connections that have not completed a handshake. */
export interface PendingHandshakes {
  /** Pending from this source address. */
  fromHost: number;
  /** Pending from every address that is not a configured member's. */
  strangers: number;
}

export type Admission =
  | { ok: true }
  | { ok: false; bound: "per-host" | "strangers"; reason: string };

/** admit decides whether a connection from a (member or stranger) host may handshake. */
export function admit(member: boolean, pending: PendingHandshakes): Admission {
  if (pending.fromHost >= inboundPendingPerHostMax) {
    return {
      ok: false,
      bound: "per-host",
      reason: `too many handshakes from this address (${inboundPendingPerHostMax} pending)`,
    };
  }
  if (!member && pending.strangers >= inboundPendingMax) {
    return {
      ok: false,
      bound: "strangers",
      reason: `too many handshakes (${inboundPendingMax} pending)`,
    };
  }
  return { ok: true };
}

/** normalizeHost makes a socket's remote address comparable with a resolved one. */
export function normalizeHost(host: string): string {
  const lower = host.toLowerCase();
  // An IPv4 peer on a dual-stack listener appears as ::ffff:a.b.c.d.
  return lower.startsWith("::ffff:") && lower.includes(".") ? lower.slice(7) : lower;
}
