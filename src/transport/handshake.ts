// The peer handshake. The dialling side sends a Hello as its first frame; the accepting
// side checks it against its own config (checkHello) and answers with a HelloReply, then
// closes the connection if it refused. Pure: the codec (codec.ts) puts these on the wire.

import type { NodeId } from "../consensus/types.ts";

/** protocolVersion is bumped on any incompatible change to frames, messages or handshake. */
export const protocolVersion = 1;

/** Hello is the first frame on every connection, sent by the side that dialled. */
export interface Hello {
  protocolVersion: number;
  clusterName: string;
  /** A hash of the whole shared config; equal fingerprints mean equal configs. */
  fingerprint: string;
  /** Config field path -> hash of its value, so a refusal can name the fields that differ. */
  fingerprintFields: Record<string, string>;
  name: NodeId;
  incarnation: string;
  /** Random bytes, fresh for each connection: the challenge for authentication. */
  nonce: Uint8Array;
  /**
   * auth is reserved for shared-secret authentication (DESIGN §5): an HMAC over the
   * handshake with the cluster secret. Empty for now; nothing checks it, so every link
   * runs in dev mode. When it lands, checkHello verifies it and the reply carries the
   * accepting side's own proof over this nonce.
   */
  auth: Uint8Array;
  /** The sender has cluster state (a term, an entry or a snapshot): not a blank node. */
  hasState: boolean;
  /** The sender is a replacement still catching up (R2). */
  recovering: boolean;
  /** The sender's durable term and last log index: peers use them to spot a rolled-back disk. */
  term: number;
  lastIndex: number;
}

/** HelloReply answers a Hello. The connection carries messages only after accepted: true. */
export interface HelloReply {
  accepted: boolean;
  reason?: string;
  /** Config fields whose hashes differ (or exist on one side only), sorted. */
  differingFields?: string[];
  /** The replying member's own name and incarnation. */
  name: NodeId;
  incarnation: string;
  /** The replying member's state, as in Hello. */
  hasState: boolean;
  recovering: boolean;
  /** Set on a refusal because the dialler's incarnation was replaced (R7). */
  fenced: boolean;
  /** Set on a refusal because the dialler's disk went back in time (restored from a backup). */
  rolledBack: boolean;
}

/** LocalHandshakeInfo is what a member checks an incoming Hello against. */
export interface LocalHandshakeInfo {
  clusterName: string;
  fingerprint: string;
  fingerprintFields: Record<string, string>;
  /** Every configured member, this one included. */
  memberNames: readonly NodeId[];
  selfName: NodeId;
}

export type HelloCheck =
  | { ok: true }
  | { ok: false; reason: string; differingFields: string[] };

/**
 * checkHello decides whether to accept a peer. It refuses another protocol version,
 * another cluster name, the peer claiming our own name, a name that is not a configured
 * member, and a different config fingerprint (naming the fields that differ).
 */
export function checkHello(hello: Hello, local: LocalHandshakeInfo): HelloCheck {
  if (hello.protocolVersion !== protocolVersion) {
    return refuse(
      `Protocol version ${hello.protocolVersion} differs from ours (${protocolVersion})`,
    );
  }
  if (hello.clusterName !== local.clusterName) {
    return refuse(
      `Cluster name "${hello.clusterName}" differs from ours ("${local.clusterName}")`,
      ["clusterName"],
    );
  }
  if (hello.name === local.selfName) {
    return refuse(`Peer claims our own name "${hello.name}"`);
  }
  if (!local.memberNames.includes(hello.name)) {
    return refuse(`Name "${hello.name}" is not a configured member`);
  }
  if (hello.fingerprint !== local.fingerprint) {
    const fields = differingFields(hello.fingerprintFields, local.fingerprintFields);
    const which = fields.length === 0
      ? "no listed field differs, so the fingerprints are computed differently"
      : `differing fields: ${fields.join(", ")}`;
    return refuse(
      `Config fingerprint "${hello.fingerprint}" differs from ours ("${local.fingerprint}"); ${which}`,
      fields,
    );
  }
  return { ok: true };
}

/**
 * differingFields lists, sorted, the fields whose hashes differ between two fingerprint
 * maps, counting a field present on one side only.
 */
export function differingFields(
  theirs: Readonly<Record<string, string>>,
  ours: Readonly<Record<string, string>>,
): string[] {
  const fields = new Set([...Object.keys(theirs), ...Object.keys(ours)]);
  const differing: string[] = [];
  for (const field of fields) {
    const theirHash = Object.hasOwn(theirs, field) ? theirs[field] : undefined;
    const ourHash = Object.hasOwn(ours, field) ? ours[field] : undefined;
    if (theirHash === undefined || ourHash === undefined || theirHash !== ourHash) {
      differing.push(field);
    }
  }
  return differing.sort();
}

function refuse(reason: string, differingFields: string[] = []): HelloCheck {
  return { ok: false, reason, differingFields };
}
