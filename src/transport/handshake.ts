// The peer handshake (DESIGN §5). Three frames, then messages:
//
//   acceptor -> dialler   Challenge   a fresh random nonce, sent as soon as it accepts
//   dialler  -> acceptor  Hello       its identity and state; auth = HMAC-SHA256(secret,
//                                     "keel-hello-v1", the challenge, the acceptor's name,
//                                     the Hello's fields and its own fresh nonce)
//   acceptor -> dialler   HelloReply  accepted or why not; auth = HMAC-SHA256(secret,
//                                     "keel-reply-v1", the Hello's nonce, the challenge,
//                                     the reply's fields)
//
// Each side proves it holds the cluster secret over a nonce the other side just chose, so
// a recorded handshake replayed on a new connection fails, and a forged refusal (which
// can make a node change its incarnation) is ignored. The exact bytes under each HMAC
// are auth_input.ts's encodeHelloAuthInput and encodeReplyAuthInput. No secret configured on
// either side is dev mode: auth is empty and unchecked. A node with a secret refuses a
// peer without one, and the other way round. Authentication covers the handshake only:
// with security.tls the link itself is protected too.
//
// Pure (HMAC is computation): the frames are handshake_types.ts, the codec puts them on
// the wire (handshake_codec.ts), inbound.ts and outbound.ts drive them.

import { createHmac, timingSafeEqual } from "node:crypto";
import type { NodeId } from "../consensus/types.ts";
import { encodeHelloAuthInput, encodeReplyAuthInput } from "./auth_input.ts";
import type { Hello, HelloReply, ProtocolRange } from "./handshake_types.ts";

export type { Challenge, Hello, HelloReply, ProtocolRange } from "./handshake_types.ts";

/**
 * protocolVersions are the peer protocol versions this binary speaks. A version is bumped
 * on any incompatible change to frames or messages; a binary keeps speaking the versions
 * before it (min) for as long as a rolling upgrade needs, so that old and new members
 * link. The Hello's layout is the same in every version: it is what negotiates.
 *
 * Negotiation: the dialler proposes its highest version; the acceptor accepts any version
 * it speaks and refuses another with versionRefusalReason (both versions, and what to do);
 * on that refusal the dialler redials at once one version lower, down to its min. So a
 * link uses the highest version both sides speak, each direction on its own, and a keel
 * of before negotiation (exactly one version, 2) is met at its version.
 * 2: the Challenge frame, authenticated Hello and HelloReply.
 */
export const protocolVersions: ProtocolRange = Object.freeze({ min: 2, max: 2 });

/** protocolVersion is the highest version this binary speaks (what it proposes first). */
export const protocolVersion = protocolVersions.max;

/** formatProtocols is "2" for one version, "2-3" for a range. */
export function formatProtocols(range: ProtocolRange): string {
  return range.min === range.max ? String(range.max) : `${range.min}-${range.max}`;
}

/** speaksProtocol: version is within range. */
export function speaksProtocol(range: ProtocolRange, version: number): boolean {
  return version >= range.min && version <= range.max;
}

/**
 * versionRefusalReason is an acceptor's refusal of a version it does not speak: both
 * versions, and which side to upgrade. It starts "Protocol version N " like the refusal of
 * a keel of before negotiation ("Protocol version 3 differs from ours (2)"), which is how
 * the dialler knows to try a lower one (isVersionRefusal).
 */
export function versionRefusalReason(theirs: number, ours: ProtocolRange): string {
  const spoken = formatProtocols(ours);
  const advice = theirs > ours.max
    ? `the peer runs a newer keel: upgrade this member to a keel that speaks protocol ${theirs}, ` +
      `or run a keel that speaks protocol ${spoken} on the peer`
    : `the peer runs an older keel: upgrade it to a keel that speaks protocol ${spoken}`;
  return `Protocol version ${theirs} is not spoken here (this member speaks protocol ${spoken}): ${advice}`;
}

/** isVersionRefusal: a refusal's reason says the peer does not speak the version proposed. */
export function isVersionRefusal(reason: string | undefined): boolean {
  return reason !== undefined && /^Protocol version \d+ /.test(reason);
}

/**
 * anonymousName stands for the member's name and incarnation in a refusal to a peer that
 * has not proven the secret: nothing that identifies the member goes to it. Not a valid
 * member name (config's memberNamePattern), so a dialler cannot mistake it for one.
 */
export const anonymousName = "?";

/** unprovenReason is the whole reason a refusal gives a peer whose proof failed. */
export const unprovenReason = "bad handshake authentication";

/** LocalHandshakeInfo is what a member checks an incoming Hello against. */
export interface LocalHandshakeInfo {
  clusterName: string;
  fingerprint: string;
  fingerprintFields: Record<string, string>;
  /** Every configured member, this one included. */
  memberNames: readonly NodeId[];
  selfName: NodeId;
  /** The versions accepted; protocolVersions when unset (tests give others). */
  protocolVersions?: ProtocolRange;
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
  const spoken = local.protocolVersions ?? protocolVersions;
  if (!speaksProtocol(spoken, hello.protocolVersion)) {
    return refuse(versionRefusalReason(hello.protocolVersion, spoken));
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

// ---- Authentication ------------------------------------------------------------------

/** authBytes is the size of an HMAC-SHA256. */
export const authBytes = 32;

/** AuthCheck is the outcome of verifying one side's proof. */
export type AuthCheck = { ok: true } | { ok: false; reason: string };

/** helloAuth is the dialler's proof: the HMAC of its Hello over the acceptor's challenge. */
export function helloAuth(
  secret: Uint8Array,
  challenge: Uint8Array,
  acceptorName: NodeId,
  hello: Hello,
): Uint8Array {
  return hmac(secret, encodeHelloAuthInput(challenge, acceptorName, hello));
}

/** replyAuth is the acceptor's proof: the HMAC of its reply over the dialler's nonce. */
export function replyAuth(
  secret: Uint8Array,
  dialerNonce: Uint8Array,
  challenge: Uint8Array,
  reply: HelloReply,
): Uint8Array {
  return hmac(secret, encodeReplyAuthInput(dialerNonce, challenge, reply));
}

/**
 * checkHelloAuth verifies a Hello's auth on the accepting side. secret undefined is dev
 * mode: only an empty auth passes. Reasons start with "bad handshake authentication".
 */
export function checkHelloAuth(
  secret: Uint8Array | undefined,
  challenge: Uint8Array,
  selfName: NodeId,
  hello: Hello,
): AuthCheck {
  return checkAuth(secret, hello.auth, () => helloAuth(secret!, challenge, selfName, hello));
}

/** checkReplyAuth verifies a HelloReply's auth on the dialling side; see checkHelloAuth. */
export function checkReplyAuth(
  secret: Uint8Array | undefined,
  dialerNonce: Uint8Array,
  challenge: Uint8Array,
  reply: HelloReply,
): AuthCheck {
  return checkAuth(secret, reply.auth, () => replyAuth(secret!, dialerNonce, challenge, reply));
}

function checkAuth(
  secret: Uint8Array | undefined,
  given: Uint8Array,
  expected: () => Uint8Array,
): AuthCheck {
  if (secret === undefined) {
    return given.byteLength === 0 ? { ok: true } : {
      ok: false,
      reason: "bad handshake authentication: the peer has a cluster secret and this node " +
        "has none (dev mode: set security.secret_file)",
    };
  }
  if (given.byteLength === 0) {
    return {
      ok: false,
      reason: "bad handshake authentication: the peer sent none (it has no " +
        "security.secret_file: dev mode)",
    };
  }
  if (!authEqual(given, expected())) {
    return { ok: false, reason: "bad handshake authentication (a different secret?)" };
  }
  return { ok: true };
}

/** authEqual compares two proofs in time that does not depend on where they differ. */
export function authEqual(given: Uint8Array, expected: Uint8Array): boolean {
  // Lengths are public (an HMAC is always authBytes); only the contents are compared
  // in constant time.
  if (given.byteLength !== expected.byteLength) return false;
  return timingSafeEqual(given, expected);
}

function hmac(secret: Uint8Array, input: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", secret).update(input).digest());
}
