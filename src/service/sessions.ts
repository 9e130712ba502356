// Exactly-once apply for any Service (Raft dissertation §6.3). Each client write may carry
// a session key (clientId, seq); the replicated sessions table remembers, per client, the
// latest seq applied, its result and a digest of its command, so a retry (same seq, same
// command, perhaps through a new leader after failover) gets the cached result instead of a
// second apply, and the same seq sent with another command is refused (the client reused its
// idempotency key) rather than answered with the first write's result. The table is part of
// the replicated state: it is changed only by apply and travels in snapshots.
//
// This file owns the envelope both ways: encodeEnvelope wraps a client's command for the log,
// unwrapResult turns what apply returned into the client's outcome. A node calls the two and
// knows nothing of the layouts below.
//
// Envelope layout (the command bytes of a log entry; integers big-endian):
//   u8 0, command                                   no session
//   u8 1, u8 clientIdBytes, clientId (UTF-8), u64 seq, command
// Result layout (what apply returns):
//   u8 0, inner result                              applied now
//   u8 1, inner result                              duplicate: the cached result of seq
//   u8 2, u8 code, message (UTF-8)                  rejected (see SessionErrorCode)
// Snapshot layout:
//   "SES2", u32 count, then count times, oldest last-applied index first:
//   u8 clientIdBytes, clientId, u64 seq, u64 index, u8 digestBytes (0 or 16), digest,
//   u32 resultBytes, result; then the inner service's snapshot (the rest).
//   "SES1" (before digests) is the same without digestBytes and digest; it still restores,
//   its clients without a digest (their retries are not checked until their next write).
//
// The digest is the first 16 bytes of SHA-256 over the inner command, computed in apply, so
// every member stores the same one.
//
// Limits: a client evicted from the full table loses its dedup; a retry of its last write
// after eviction is applied again. With sessionClientsMax clients that needs more than that
// many other clients to write between a client's attempt and its retry.

import { createHash } from "node:crypto";
import { assert } from "../lib/assert.ts";
import {
  type ApplyContext,
  type LogPosition,
  type Service,
  type ServiceRole,
  type StartContext,
  toApplyContext,
} from "./service.ts";
import { ByteReader } from "../lib/byte_reader.ts";
import { concatBytes } from "../lib/bytes.ts";

/**
 * SessionKey identifies a client write: a retry reuses its seq. The same shape as
 * http/api.ts's SessionKey, declared here so that service/ does not import from http/.
 */
export interface SessionKey {
  clientId: string;
  /** Per-client sequence number, a positive safe integer. */
  seq: number;
}

/**
 * sessionClientsMax bounds the sessions table. It shapes replicated state, so every
 * member must use the same value.
 */
export const sessionClientsMax = 10_000;
/** sessionClientIdBytesMax bounds a client id (UTF-8 bytes). */
export const sessionClientIdBytesMax = 128;

const envelopeNoSession = 0;
const envelopeSession = 1;
const resultApplied = 0;
const resultDuplicate = 1;
const resultRejected = 2;
const snapshotMagic = "SES2";
const snapshotMagicV1 = "SES1";
/** digestBytes is the size of a command's digest in the table. */
const digestBytes = 16;

/**
 * SessionErrorCode says why a write was not applied: its seq is older than the client's
 * last (stale-sequence), its seq is the last one but its command another
 * (idempotency-key-reused), or its envelope cannot be read (malformed-envelope).
 */
export type SessionErrorCode = "stale-sequence" | "malformed-envelope" | "idempotency-key-reused";
// The order is the wire code (index + 1): append only.
const errorCodes: readonly SessionErrorCode[] = [
  "stale-sequence",
  "malformed-envelope",
  "idempotency-key-reused",
];

/** SessionResult is a decoded SessionService.apply result. */
export type SessionResult =
  | { type: "applied"; result: Uint8Array }
  | { type: "duplicate"; result: Uint8Array }
  | { type: "rejected"; code: SessionErrorCode; message: string };

/** SessionOptions configure a SessionService; they must be equal on every member. */
export interface SessionOptions {
  clientsMax?: number;
}

/**
 * SessionOutcome is what a client is told of its write, from the result apply returned:
 * the (inner) result with the index its entry was logged at, or why it was refused.
 */
export type SessionOutcome =
  | { ok: true; result: Uint8Array; index: number }
  | { ok: false; code: "rejected"; reason: SessionErrorCode; message: string };

interface ClientSession {
  seq: number;
  /** Log index of the client's last applied write. */
  index: number;
  /** Digest of its command; undefined when restored from a snapshot without digests. */
  digest: Uint8Array | undefined;
  result: Uint8Array;
}

/** SessionService wraps a Service so that writes carrying a session key apply once. */
export class SessionService implements Service {
  readonly inner: Service;
  readonly clientsMax: number;
  // Map order is the order of last apply: an update deletes and re-inserts its client, and
  // apply runs in log order, so the first client is the one with the oldest last-applied
  // index. Every member evicts the same client, and the snapshot keeps the order.
  #clients = new Map<string, ClientSession>();

  constructor(inner: Service, options: SessionOptions = {}) {
    const clientsMax = options.clientsMax ?? sessionClientsMax;
    assert(Number.isInteger(clientsMax) && clientsMax >= 1, "clientsMax must be positive");
    this.inner = inner;
    this.clientsMax = clientsMax;
  }

  /** clientCount is the number of clients in the sessions table. */
  get clientCount(): number {
    return this.#clients.size;
  }

  /** lastApplied returns the table's entry for a client, for tests and status. */
  lastApplied(clientId: string): { seq: number; index: number } | undefined {
    const session = this.#clients.get(clientId);
    return session === undefined ? undefined : { seq: session.seq, index: session.index };
  }

  // A bare LogPosition (tests, tools) is completed into a standalone context.
  apply(envelope: Uint8Array, position: LogPosition | ApplyContext): Uint8Array {
    const context = toApplyContext(position);
    let decoded: { session: SessionKey | undefined; command: Uint8Array };
    try {
      decoded = decodeEnvelope(envelope);
    } catch (error: unknown) {
      if (error instanceof EnvelopeError) {
        return encodeRejected("malformed-envelope", error.message);
      }
      throw error;
    }
    const { session, command } = decoded;
    if (session === undefined) {
      return encodeInner(resultApplied, this.inner.apply(command, context));
    }

    const cached = this.#clients.get(session.clientId);
    if (cached !== undefined && session.seq === cached.seq) {
      if (cached.digest !== undefined && !bytesEqual(cached.digest, commandDigest(command))) {
        return encodeRejected(
          "idempotency-key-reused",
          `Sequence ${session.seq} of client ${
            JSON.stringify(session.clientId)
          } was already used for a different write (applied at index ${cached.index}); a retry must repeat the write exactly, a new write needs a new sequence`,
        );
      }
      return encodeInner(resultDuplicate, cached.result);
    }
    if (cached !== undefined && session.seq < cached.seq) {
      return encodeRejected(
        "stale-sequence",
        `Sequence ${session.seq} of client ${
          JSON.stringify(session.clientId)
        } is older than its last applied sequence ${cached.seq}`,
      );
    }
    const digest = commandDigest(command);
    const result = this.inner.apply(command, context);
    if (cached !== undefined) {
      this.#clients.delete(session.clientId);
    } else if (this.#clients.size >= this.clientsMax) {
      this.#evictOldest();
    }
    this.#clients.set(session.clientId, {
      seq: session.seq,
      index: context.index,
      digest,
      result,
    });
    return encodeInner(resultApplied, result);
  }

  snapshot(): Uint8Array {
    const inner = this.inner.snapshot();
    const parts: Uint8Array[] = [textEncoder.encode(snapshotMagic), u32(this.#clients.size)];
    for (const [clientId, session] of this.#clients) {
      const id = textEncoder.encode(clientId);
      const digest = session.digest ?? new Uint8Array(0);
      parts.push(
        Uint8Array.of(id.length),
        id,
        u64(session.seq),
        u64(session.index),
        Uint8Array.of(digest.length),
        digest,
        u32(session.result.length),
        session.result,
      );
    }
    parts.push(inner);
    return concatBytes(parts);
  }

  restore(data: Uint8Array): void {
    // Decode the table first and restore the inner service before swapping the table in,
    // so that a bad snapshot leaves this service as it was.
    const clients = new Map<string, ClientSession>();
    let rest: Uint8Array;
    try {
      const reader = new ByteReader(data, (message) => new EnvelopeError(message));
      const magic = textDecoder.decode(reader.bytes(snapshotMagic.length));
      if (magic !== snapshotMagic && magic !== snapshotMagicV1) {
        throw new EnvelopeError(`unknown format ${JSON.stringify(magic)}`);
      }
      const hasDigests = magic === snapshotMagic;
      const count = reader.u32();
      let previousIndex = -1;
      for (let i = 0; i < count; i++) {
        const clientId = readClientId(reader);
        const seq = reader.u64();
        const index = reader.u64();
        const digest = hasDigests ? readDigest(reader) : undefined;
        const result = reader.bytes(reader.u32()).slice();
        if (clients.has(clientId)) {
          throw new EnvelopeError(`client ${JSON.stringify(clientId)} appears twice`);
        }
        if (index <= previousIndex) throw new EnvelopeError(`index ${index} is out of order`);
        previousIndex = index;
        clients.set(clientId, { seq, index, digest, result });
      }
      rest = reader.rest();
    } catch (error: unknown) {
      // TypeError: bytes that are not UTF-8 where text is expected.
      if (error instanceof EnvelopeError || error instanceof TypeError) {
        throw new Error(`Invalid sessions snapshot of ${data.length} bytes: ${error.message}`);
      }
      throw error;
    }
    this.inner.restore(rest);
    this.#clients = clients;
    while (this.#clients.size > this.clientsMax) this.#evictOldest();
  }

  // The hooks below belong to the inner service: the sessions table has no timers.

  onTimer(id: string, context: ApplyContext): void {
    this.inner.onTimer?.(id, context);
  }

  start(context: StartContext): void {
    this.inner.start?.(context);
  }

  onRoleChange(role: ServiceRole): void {
    this.inner.onRoleChange?.(role);
  }

  #evictOldest(): void {
    const oldest = this.#clients.keys().next();
    assert(oldest.done !== true, "eviction from an empty sessions table");
    this.#clients.delete(oldest.value);
  }
}

/** encodeEnvelope wraps a service command with its optional session key for the log. */
export function encodeEnvelope(session: SessionKey | undefined, command: Uint8Array): Uint8Array {
  if (session === undefined) return concatBytes([Uint8Array.of(envelopeNoSession), command]);
  const problem = validateSessionKey(session);
  if (problem !== undefined) throw new RangeError(problem);
  const id = textEncoder.encode(session.clientId);
  return concatBytes([Uint8Array.of(envelopeSession, id.length), id, u64(session.seq), command]);
}

/** decodeEnvelope is the inverse of encodeEnvelope; it throws on malformed bytes. */
export function decodeEnvelope(
  envelope: Uint8Array,
): { session: SessionKey | undefined; command: Uint8Array } {
  const reader = new ByteReader(envelope, (message) => new EnvelopeError(message));
  const tag = reader.u8();
  if (tag === envelopeNoSession) return { session: undefined, command: reader.rest() };
  if (tag !== envelopeSession) throw new EnvelopeError(`unknown envelope tag ${tag}`);
  const clientId = readClientId(reader);
  const seq = reader.u64();
  if (seq < 1) throw new EnvelopeError("sequence must be positive");
  return { session: { clientId, seq }, command: reader.rest() };
}

/** validateSessionKey returns why a session key cannot be encoded, or undefined. */
export function validateSessionKey(session: SessionKey): string | undefined {
  const bytes = textEncoder.encode(session.clientId).length;
  if (bytes === 0) return "Client id must not be empty";
  if (bytes > sessionClientIdBytesMax) {
    return `Client id of ${bytes} bytes exceeds the maximum of ${sessionClientIdBytesMax} bytes`;
  }
  if (!Number.isSafeInteger(session.seq) || session.seq < 1) {
    return `Sequence ${session.seq} must be a positive safe integer`;
  }
  return undefined;
}

/**
 * unwrapResult is the client's outcome of a write whose entry was logged at `index`, from
 * the bytes SessionService.apply returned for it; it throws on malformed bytes. A duplicate
 * answers the first attempt's result (which carries the first attempt's index, for kv).
 */
export function unwrapResult(bytes: Uint8Array, index: number): SessionOutcome {
  const decoded = decodeSessionResult(bytes);
  if (decoded.type === "rejected") {
    return { ok: false, code: "rejected", reason: decoded.code, message: decoded.message };
  }
  return { ok: true, result: decoded.result, index };
}

/** decodeSessionResult reads SessionService.apply result bytes; it throws on malformed bytes. */
export function decodeSessionResult(bytes: Uint8Array): SessionResult {
  try {
    const reader = new ByteReader(bytes, (message) => new EnvelopeError(message));
    const tag = reader.u8();
    switch (tag) {
      case resultApplied:
        return { type: "applied", result: reader.rest() };
      case resultDuplicate:
        return { type: "duplicate", result: reader.rest() };
      case resultRejected: {
        const code = errorCodes[reader.u8() - 1];
        if (code === undefined) throw new EnvelopeError("unknown error code");
        return { type: "rejected", code, message: textDecoder.decode(reader.rest()) };
      }
      default:
        throw new EnvelopeError(`unknown result tag ${tag}`);
    }
  } catch (error: unknown) {
    if (error instanceof EnvelopeError || error instanceof TypeError) {
      throw new Error(`Invalid session result of ${bytes.length} bytes: ${error.message}`);
    }
    throw error;
  }
}

function encodeInner(tag: number, result: Uint8Array): Uint8Array {
  return concatBytes([Uint8Array.of(tag), result]);
}

function encodeRejected(code: SessionErrorCode, message: string): Uint8Array {
  return concatBytes([
    Uint8Array.of(resultRejected, errorCodes.indexOf(code) + 1),
    textEncoder.encode(message),
  ]);
}

function readDigest(reader: ByteReader): Uint8Array | undefined {
  const length = reader.u8();
  if (length === 0) return undefined;
  if (length !== digestBytes) throw new EnvelopeError(`digest of ${length} bytes`);
  return reader.bytes(length).slice();
}

/** commandDigest identifies a command in the table: SHA-256, its first digestBytes bytes. */
function commandDigest(command: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(command).digest().subarray(0, digestBytes));
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function readClientId(reader: ByteReader): string {
  const length = reader.u8();
  if (length === 0 || length > sessionClientIdBytesMax) {
    throw new EnvelopeError(`client id of ${length} bytes is out of range`);
  }
  try {
    return textDecoder.decode(reader.bytes(length));
  } catch {
    throw new EnvelopeError("client id is not valid UTF-8");
  }
}

// ---- Bytes ----------------------------------------------------------------------------

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const twoTo32 = 2 ** 32;

/** EnvelopeError marks bytes that do not follow the layout. */
class EnvelopeError extends Error {
  override name = "EnvelopeError";
}

function u32(value: number): Uint8Array {
  assert(Number.isInteger(value) && value >= 0 && value < twoTo32, "u32 out of range");
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

function u64(value: number): Uint8Array {
  assert(Number.isSafeInteger(value) && value >= 0, "u64 must be a non-negative safe integer");
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, Math.floor(value / twoTo32));
  view.setUint32(4, value >>> 0);
  return bytes;
}
