// The gossip datagram of the name scheme (resolver/gossip.ts): a pure, bounded codec.
//
// Layout (one UDP datagram):
//   magic "KGS1" (4 bytes) | flags (1 byte; bit 0: signed) | mac (32 bytes) | body
// body is UTF-8 JSON: { cluster, from, pull, entries: [claim, ...] }.
// mac is HMAC-SHA256 with the cluster secret over magic, flags and body (everything but
// the mac itself); all zero when unsigned. A node with a secret accepts only signed
// datagrams with a valid mac; a node without one (dev mode) accepts only unsigned ones,
// since it could not check a signature (a mixed cluster is a misconfiguration and is
// reported, never half-trusted).
//
// decodeGossip never throws for bad input: every way a datagram can be wrong is a value.

import { createHmac, timingSafeEqual } from "node:crypto";
import { isIP } from "node:net";

/** gossipMessageBytesMax bounds one datagram (far below UDP's 65507). */
export const gossipMessageBytesMax = 16 * 1024;
/** gossipEntriesMax bounds the claims in one datagram (config allows at most 9 members). */
export const gossipEntriesMax = 16;
/** incarnationLengthMax: an incarnation is 32 hex characters today; allow some room. */
export const incarnationLengthMax = 64;
const nameLengthMax = 63;
const hostLengthMax = 253;

const magic = new Uint8Array([0x4b, 0x47, 0x53, 0x31]); // "KGS1"
const macBytes = 32;
const headerBytes = magic.length + 1 + macBytes;
const flagSigned = 1;

const memberNamePattern = /^[A-Za-z0-9._-]{1,63}$/;
const dnsNamePattern =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/;

/** GossipEndpoint is an advertised "host:port": host is an IP or a DNS name. */
export interface GossipEndpoint {
  host: string;
  port: number;
}

/**
 * GossipClaim is what a member says about itself: "name is at these addresses, as
 * incarnation, at version seq". Only the owner creates claims for its name; others relay
 * them unchanged.
 */
export interface GossipClaim {
  name: string;
  /** The owner's Raft incarnation (a new one for each wiped data dir). */
  incarnation: string;
  /** The owner is a replacement still catching up (R2): not yet fenced in. */
  recovering: boolean;
  /**
   * seq is the owner's version of its claim: it grows every gossip round (a heartbeat) and
   * jumps past any other claim for the owner's name it hears (refutation).
   */
  seq: number;
  peer: GossipEndpoint;
  http: GossipEndpoint;
  gossip: GossipEndpoint;
}

export interface GossipMessage {
  cluster: string;
  /** The sending member's name (trusted as far as the mac is). */
  from: string;
  /** The sender asks for the receiver's whole table in return (it has just started). */
  pull: boolean;
  entries: GossipClaim[];
}

export type DecodeFailure =
  | "oversize"
  | "malformed"
  | "unsigned"
  | "bad-signature"
  | "signed-without-secret";

export type DecodeResult =
  | { ok: true; message: GossipMessage }
  | { ok: false; reason: DecodeFailure; detail: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * encodeGossip renders a message as one datagram, signed when a secret is given. It throws
 * a RangeError when the result would exceed gossipMessageBytesMax (callers split tables).
 */
export function encodeGossip(message: GossipMessage, secret: Uint8Array | undefined): Uint8Array {
  const body = encoder.encode(JSON.stringify({
    cluster: message.cluster,
    from: message.from,
    pull: message.pull,
    entries: message.entries.map((entry) => ({
      name: entry.name,
      incarnation: entry.incarnation,
      recovering: entry.recovering,
      seq: entry.seq,
      peer: formatGossipEndpoint(entry.peer),
      http: formatGossipEndpoint(entry.http),
      gossip: formatGossipEndpoint(entry.gossip),
    })),
  }));
  const size = headerBytes + body.length;
  if (size > gossipMessageBytesMax || message.entries.length > gossipEntriesMax) {
    throw new RangeError(
      `Gossip message of ${size} bytes and ${message.entries.length} entries exceeds the ` +
        `maximum of ${gossipMessageBytesMax} bytes and ${gossipEntriesMax} entries`,
    );
  }
  const bytes = new Uint8Array(size);
  bytes.set(magic, 0);
  bytes[magic.length] = secret === undefined ? 0 : flagSigned;
  bytes.set(body, headerBytes);
  if (secret !== undefined) bytes.set(mac(secret, bytes), magic.length + 1);
  return bytes;
}

/** decodeGossip checks a datagram's size, magic, signature and shape. */
export function decodeGossip(bytes: Uint8Array, secret: Uint8Array | undefined): DecodeResult {
  if (bytes.length > gossipMessageBytesMax) {
    return fail("oversize", `${bytes.length} bytes, more than ${gossipMessageBytesMax}`);
  }
  if (bytes.length < headerBytes || !magic.every((byte, index) => bytes[index] === byte)) {
    return fail("malformed", "not a keel gossip datagram");
  }
  const flags = bytes[magic.length]!;
  if ((flags & ~flagSigned) !== 0) return fail("malformed", `unknown flags ${flags}`);
  const signed = (flags & flagSigned) !== 0;
  if (secret !== undefined && !signed) return fail("unsigned", "no signature");
  if (secret === undefined && signed) {
    return fail("signed-without-secret", "signed, but this node has no secret to check it");
  }
  if (secret !== undefined) {
    const given = bytes.subarray(magic.length + 1, headerBytes);
    if (!timingSafeEqual(given, mac(secret, bytes))) {
      return fail("bad-signature", "signature does not match the cluster secret");
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes.subarray(headerBytes)));
  } catch (error: unknown) {
    return fail("malformed", `body is not JSON: ${error instanceof Error ? error.message : ""}`);
  }
  const message = readMessage(value);
  return typeof message === "string" ? fail("malformed", message) : { ok: true, message };
}

function fail(reason: DecodeFailure, detail: string): DecodeResult {
  return { ok: false, reason, detail };
}

/** mac is the HMAC-SHA256 of a datagram with its mac field left out. */
function mac(secret: Uint8Array, bytes: Uint8Array): Uint8Array {
  const hmac = createHmac("sha256", secret);
  hmac.update(bytes.subarray(0, magic.length + 1));
  hmac.update(bytes.subarray(headerBytes));
  return new Uint8Array(hmac.digest());
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readMessage(value: unknown): GossipMessage | string {
  if (!isRecord(value)) return "body must be an object";
  const { cluster, from, pull, entries } = value;
  if (typeof cluster !== "string" || cluster.length === 0 || cluster.length > nameLengthMax) {
    return "cluster must be a name";
  }
  if (typeof from !== "string" || !memberNamePattern.test(from)) return "from must be a name";
  if (typeof pull !== "boolean") return "pull must be a boolean";
  if (!Array.isArray(entries) || entries.length > gossipEntriesMax) {
    return `entries must be a list of at most ${gossipEntriesMax}`;
  }
  const claims: GossipClaim[] = [];
  for (const [index, entry] of entries.entries()) {
    const claim = readClaim(entry);
    if (typeof claim === "string") return `entries[${index}]: ${claim}`;
    claims.push(claim);
  }
  return { cluster, from, pull, entries: claims };
}

function readClaim(value: unknown): GossipClaim | string {
  if (!isRecord(value)) return "must be an object";
  const { name, incarnation, recovering, seq } = value;
  if (typeof name !== "string" || !memberNamePattern.test(name)) return "name must be a name";
  if (
    typeof incarnation !== "string" || incarnation.length === 0 ||
    incarnation.length > incarnationLengthMax || !/^[A-Za-z0-9_-]+$/.test(incarnation)
  ) {
    return 'incarnation must be 1-64 letters, digits, "_" or "-"';
  }
  if (typeof recovering !== "boolean") return "recovering must be a boolean";
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
    return "seq must be a whole number >= 0";
  }
  const endpoints: GossipEndpoint[] = [];
  for (const key of ["peer", "http", "gossip"] as const) {
    const text = value[key];
    const endpoint = typeof text === "string" ? parseGossipEndpoint(text) : undefined;
    if (endpoint === undefined) return `${key} must be "host:port"`;
    endpoints.push(endpoint);
  }
  const [peer, http, gossip] = endpoints as [GossipEndpoint, GossipEndpoint, GossipEndpoint];
  return { name, incarnation, recovering, seq, peer, http, gossip };
}

/**
 * parseGossipEndpoint reads "host:port", "1.2.3.4:port" or "[::1]:port"; undefined when
 * malformed or when the host is a wildcard address (0.0.0.0, ::), which nobody can dial.
 */
export function parseGossipEndpoint(text: string): GossipEndpoint | undefined {
  if (text.length > hostLengthMax + 8) return undefined;
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(text);
  if (bracketed !== null) {
    host = bracketed[1]!.toLowerCase();
    portText = bracketed[2]!;
    if (isIP(host) !== 6) return undefined;
  } else {
    const plain = /^([^:\[\]]+):([0-9]{1,5})$/.exec(text);
    if (plain === null) return undefined;
    host = plain[1]!.toLowerCase();
    portText = plain[2]!;
    if (isIP(host) === 0 && (/^[0-9.]+$/.test(host) || !dnsNamePattern.test(host))) {
      return undefined;
    }
  }
  const port = Number(portText);
  if (port < 1 || port > 65535 || isWildcard(host)) return undefined;
  return { host, port };
}

/** isWildcard is true for the "any address" hosts a socket binds but nobody dials. */
export function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || /^(0+:){7}0+$/.test(host) || host === "[::]";
}

/** formatGossipEndpoint renders an endpoint as "host:port", IPv6 hosts in brackets. */
export function formatGossipEndpoint(endpoint: GossipEndpoint): string {
  return endpoint.host.includes(":")
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}
