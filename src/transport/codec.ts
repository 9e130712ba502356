// Binary encoding of consensus messages and handshake frames. Pure: no I/O.
//
// A frame payload starts with a kind byte:
//   1 hello        Hello
//   2 helloReply   HelloReply
//   3 message      one Message
//   4 batch        varint count (1..batchMessagesMax), then that many Messages back to back
//   5 challenge    u8 length (exactly nonceBytes), then the acceptor's nonce
//
// A Message is: u8 type tag, varint term, name from, name to, then its own fields in the
// order of the interfaces in consensus/types.ts. Field encodings:
//   varint  unsigned LEB128 of a safe integer: at most 8 bytes, no overlong forms, so
//           every value has exactly one encoding; small terms and indexes take 1-3 bytes
//   bool    one byte, 0 or 1
//   name    u8 byte length (1..255), then UTF-8
//   bytes   varint byte length, then the raw bytes
//   short   u8 byte length (0..nonceBytesMax), then the raw bytes (nonces, auth)
//   entry   varint index, varint term, u8 kind (0 noop, 1 command, 2 fence), bytes data
//
// decode* validate everything and throw DecodeError on any malformed input: an unknown
// tag or kind, a truncated field, an overlong or unsafe varint, invalid UTF-8, a count or
// length beyond its limit, entries that are not contiguous after prevLogIndex, trailing
// bytes. Decoded Uint8Array fields (entry data, snapshot chunk data) are views of the
// input, which must not be modified afterwards.

import { assert, AssertionError, unreachable } from "../lib/assert.ts";
import type { Entry, EntryKind, Message, MessageType } from "../consensus/types.ts";
import { checkFrameBytes, frameHeaderBytes, writeFrameHeader } from "./frame.ts";
import type { Challenge, Hello, HelloReply } from "./handshake.ts";
import {
  batchMessagesMax,
  entriesPerMessageMax,
  fingerprintFieldsMax,
  frameBytesMax,
  nameBytesMax,
  nonceBytes,
  nonceBytesMax,
  reasonBytesMax,
} from "./limits.ts";

/** DecodeError reports malformed input from the network; it never means a local bug. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

/** FrameKind is the first byte of every frame payload. */
export const FrameKind = {
  hello: 1,
  helloReply: 2,
  message: 3,
  batch: 4,
  challenge: 5,
} as const;

/** Frame is a decoded frame payload. */
export type Frame =
  | { kind: "hello"; hello: Hello }
  | { kind: "helloReply"; reply: HelloReply }
  | { kind: "challenge"; challenge: Challenge }
  | { kind: "messages"; messages: Message[] };

// ---- Tags ------------------------------------------------------------------------------

const messageTags: Readonly<Record<MessageType, number>> = {
  requestVote: 1,
  preVote: 2,
  requestVoteResponse: 3,
  preVoteResponse: 4,
  appendEntries: 5,
  appendEntriesResponse: 6,
  heartbeat: 7,
  heartbeatResponse: 8,
  installSnapshot: 9,
  installSnapshotResponse: 10,
  timeoutNow: 11,
  readIndex: 12,
  readIndexResponse: 13,
};

const messageTagMin = 1;
const messageTagMax = 13;

const entryKindCodes: Readonly<Record<EntryKind, number>> = {
  noop: 0,
  command: 1,
  fence: 2,
};

const entryKinds: readonly EntryKind[] = ["noop", "command", "fence"];

/** Upper bound of a varint: 8 bytes of 7 bits hold any safe integer (53 bits). */
const varintBytesMax = 8;
/** Smallest possible encoded entry: 1-byte index, term, kind and data length. */
const entryBytesMin = 4;
/** Upper bound of a message's fixed part: tag, at most 8 varints, at most 4 bools. */
const messageFixedBytesMax = 1 + 8 * varintBytesMax + 4;
/** Upper bound of an entry apart from its data: index, term, kind, data length. */
const entryFixedBytesMax = 3 * varintBytesMax + 1;

// ---- Public API ------------------------------------------------------------------------

/** encodeMessage returns a message's encoding (no frame kind, no length prefix). */
export function encodeMessage(message: Message): Uint8Array {
  const writer = new Writer(messageBytesUpperBound(message));
  writeMessage(writer, message);
  return writer.finish();
}

/** decodeMessage reads exactly one message from bytes; throws DecodeError. */
export function decodeMessage(bytes: Uint8Array): Message {
  const reader = new Reader(bytes);
  const message = readMessage(reader);
  reader.end("message");
  return message;
}

/**
 * messageBytesUpperBound bounds a message's encoded size without encoding it: the sender
 * uses it to size buffers, fill batches and account queue bytes.
 */
export function messageBytesUpperBound(message: Message): number {
  let bytes = messageFixedBytesMax + nameBytesUpperBound(message.from) +
    nameBytesUpperBound(message.to);
  if (message.type === "appendEntries") {
    bytes += varintBytesMax;
    for (const entry of message.entries) bytes += entryFixedBytesMax + entry.data.byteLength;
  } else if (message.type === "installSnapshot") {
    bytes += message.data.byteLength;
  }
  return bytes;
}

export function encodeHello(hello: Hello): Uint8Array {
  const writer = new Writer(helloBytesUpperBound(hello));
  writeHello(writer, hello);
  return writer.finish();
}

export function decodeHello(bytes: Uint8Array): Hello {
  const reader = new Reader(bytes);
  const hello = readHello(reader);
  reader.end("hello");
  return hello;
}

export function encodeHelloReply(reply: HelloReply): Uint8Array {
  const writer = new Writer(helloReplyBytesUpperBound(reply));
  writeHelloReply(writer, reply);
  return writer.finish();
}

export function decodeHelloReply(bytes: Uint8Array): HelloReply {
  const reader = new Reader(bytes);
  const reply = readHelloReply(reader);
  reader.end("hello reply");
  return reply;
}

/** encodeHelloFrame returns a whole frame, length prefix included, carrying hello. */
export function encodeHelloFrame(hello: Hello): Uint8Array {
  const writer = new Writer(frameHeaderBytes + 1 + helloBytesUpperBound(hello));
  writer.skip(frameHeaderBytes);
  writer.u8(FrameKind.hello);
  writeHello(writer, hello);
  return writer.finishFrame();
}

/** encodeHelloReplyFrame returns a whole frame, length prefix included, carrying reply. */
export function encodeHelloReplyFrame(reply: HelloReply): Uint8Array {
  const writer = new Writer(frameHeaderBytes + 1 + helloReplyBytesUpperBound(reply));
  writer.skip(frameHeaderBytes);
  writer.u8(FrameKind.helloReply);
  writeHelloReply(writer, reply);
  return writer.finishFrame();
}

/** encodeChallengeFrame returns a whole frame, length prefix included, carrying challenge. */
export function encodeChallengeFrame(challenge: Challenge): Uint8Array {
  assert(
    challenge.nonce.byteLength === nonceBytes,
    `a challenge nonce is ${nonceBytes} bytes, not ${challenge.nonce.byteLength}`,
  );
  const writer = new Writer(frameHeaderBytes + 2 + nonceBytes);
  writer.skip(frameHeaderBytes);
  writer.u8(FrameKind.challenge);
  writer.shortBytes(challenge.nonce, "challenge nonce");
  return writer.finishFrame();
}

/** helloAuthLabel and replyAuthLabel start the bytes each side's HMAC covers. */
export const helloAuthLabel = "keel-hello-v1";
export const replyAuthLabel = "keel-reply-v1";

/**
 * encodeHelloAuthInput returns the bytes a Hello's auth is the HMAC of: the label
 * "keel-hello-v1", the acceptor's challenge nonce, the name of the member the dialler
 * means to reach, then the Hello encoded with an empty auth and its fingerprint fields
 * sorted by name (so the bytes do not depend on property order), each part in its wire
 * encoding (length-prefixed, so no two inputs run together the same way).
 */
export function encodeHelloAuthInput(
  challenge: Uint8Array,
  acceptorName: string,
  hello: Hello,
): Uint8Array {
  const writer = new Writer(
    2 + helloAuthLabel.length + 1 + challenge.byteLength + nameBytesUpperBound(acceptorName) +
      helloBytesUpperBound(hello),
  );
  writer.name(helloAuthLabel, "label");
  writer.shortBytes(challenge, "challenge nonce");
  writer.name(acceptorName, "acceptor name");
  writeHello(writer, { ...hello, auth: new Uint8Array(0) }, true);
  return writer.finish();
}

/**
 * encodeReplyAuthInput returns the bytes a HelloReply's auth is the HMAC of: the label
 * "keel-reply-v1", the dialler's Hello nonce, the acceptor's challenge nonce, then the
 * reply encoded with an empty auth.
 */
export function encodeReplyAuthInput(
  dialerNonce: Uint8Array,
  challenge: Uint8Array,
  reply: HelloReply,
): Uint8Array {
  const writer = new Writer(
    2 + replyAuthLabel.length + 2 + dialerNonce.byteLength + challenge.byteLength +
      helloReplyBytesUpperBound(reply),
  );
  writer.name(replyAuthLabel, "label");
  writer.shortBytes(dialerNonce, "dialler nonce");
  writer.shortBytes(challenge, "challenge nonce");
  writeHelloReply(writer, { ...reply, auth: new Uint8Array(0) });
  return writer.finish();
}

/**
 * encodeMessagesFrame returns a whole frame, length prefix included: a message frame for
 * one message, a batch frame for several. Throws RangeError when the payload exceeds
 * frameBytesMax (the caller keeps batches within batchBytesTarget, so only a single huge
 * message can).
 */
export function encodeMessagesFrame(messages: readonly Message[]): Uint8Array {
  assert(
    messages.length >= 1 && messages.length <= batchMessagesMax,
    `a messages frame holds 1 to ${batchMessagesMax} messages, not ${messages.length}`,
  );
  let capacity = frameHeaderBytes + 1 + varintBytesMax;
  for (const message of messages) capacity += messageBytesUpperBound(message);
  const writer = new Writer(capacity);
  writer.skip(frameHeaderBytes);
  if (messages.length === 1) {
    writer.u8(FrameKind.message);
  } else {
    writer.u8(FrameKind.batch);
    writer.varint(messages.length, "batch count");
  }
  for (const message of messages) writeMessage(writer, message);
  return writer.finishFrame();
}

/** decodeFrame reads a frame payload (as FrameDecoder returns it); throws DecodeError. */
export function decodeFrame(payload: Uint8Array): Frame {
  const reader = new Reader(payload);
  const kind = reader.u8("frame kind");
  let frame: Frame;
  switch (kind) {
    case FrameKind.hello:
      frame = { kind: "hello", hello: readHello(reader) };
      break;
    case FrameKind.helloReply:
      frame = { kind: "helloReply", reply: readHelloReply(reader) };
      break;
    case FrameKind.challenge: {
      const nonce = reader.shortBytes("challenge nonce");
      if (nonce.byteLength !== nonceBytes) {
        throw new DecodeError(
          `Challenge nonce of ${nonce.byteLength} bytes; it must be ${nonceBytes} bytes`,
        );
      }
      frame = { kind: "challenge", challenge: { nonce } };
      break;
    }
    case FrameKind.message:
      frame = { kind: "messages", messages: [readMessage(reader)] };
      break;
    case FrameKind.batch: {
      const count = reader.varint("batch count");
      if (count < 1 || count > batchMessagesMax) {
        throw new DecodeError(
          `Batch of ${count} messages is outside the allowed range 1..${batchMessagesMax}`,
        );
      }
      const messages: Message[] = [];
      for (let i = 0; i < count; i++) messages.push(readMessage(reader));
      frame = { kind: "messages", messages };
      break;
    }
    default:
      throw new DecodeError(`Unknown frame kind ${kind}`);
  }
  reader.end("frame");
  return frame;
}

// ---- Messages --------------------------------------------------------------------------

function writeMessage(writer: Writer, message: Message): void {
  writer.u8(messageTags[message.type]);
  writer.varint(message.term, "term");
  writer.name(message.from, "from");
  writer.name(message.to, "to");
  switch (message.type) {
    case "requestVote":
    case "preVote":
      writer.varint(message.lastLogIndex, "lastLogIndex");
      writer.varint(message.lastLogTerm, "lastLogTerm");
      writer.bool(message.transfer);
      return;
    case "requestVoteResponse":
    case "preVoteResponse":
      writer.bool(message.granted);
      return;
    case "appendEntries":
      writer.varint(message.prevLogIndex, "prevLogIndex");
      writer.varint(message.prevLogTerm, "prevLogTerm");
      writer.varint(message.commitIndex, "commitIndex");
      writer.varint(message.entries.length, "entry count");
      for (const entry of message.entries) {
        writer.varint(entry.index, "entry index");
        writer.varint(entry.term, "entry term");
        writer.u8(entryKindCodes[entry.kind]);
        writer.bytes(entry.data);
      }
      return;
    case "appendEntriesResponse":
      writer.bool(message.success);
      writer.varint(message.matchIndex, "matchIndex");
      writer.varint(message.rejectHintIndex, "rejectHintIndex");
      writer.varint(message.rejectHintTerm, "rejectHintTerm");
      return;
    case "heartbeat":
      writer.varint(message.commitIndex, "commitIndex");
      writer.varint(message.context, "context");
      return;
    case "heartbeatResponse":
      writer.varint(message.context, "context");
      writer.varint(message.lastIndex, "lastIndex");
      return;
    case "installSnapshot":
      writer.varint(message.snapshot.index, "snapshot index");
      writer.varint(message.snapshot.term, "snapshot term");
      writer.varint(message.snapshot.bytes, "snapshot bytes");
      writer.varint(message.offset, "offset");
      writer.bytes(message.data);
      writer.bool(message.done);
      return;
    case "installSnapshotResponse":
      writer.varint(message.snapshotIndex, "snapshotIndex");
      writer.varint(message.offset, "offset");
      writer.bool(message.success);
      writer.bool(message.done);
      return;
    case "timeoutNow":
      return;
    case "readIndex":
      writer.varint(message.requestId, "requestId");
      return;
    case "readIndexResponse":
      writer.varint(message.requestId, "requestId");
      writer.varint(message.index, "index");
      return;
    default:
      unreachable(message);
  }
}

function readMessage(reader: Reader): Message {
  const tag = reader.u8("message type");
  if (tag < messageTagMin || tag > messageTagMax) {
    throw new DecodeError(`Unknown message type tag ${tag}`);
  }
  const term = reader.varint("term");
  const from = reader.name("from");
  const to = reader.name("to");
  switch (tag) {
    case messageTags.requestVote:
    case messageTags.preVote:
      return {
        type: tag === messageTags.requestVote ? "requestVote" : "preVote",
        term,
        from,
        to,
        lastLogIndex: reader.varint("lastLogIndex"),
        lastLogTerm: reader.varint("lastLogTerm"),
        transfer: reader.bool("transfer"),
      };
    case messageTags.requestVoteResponse:
    case messageTags.preVoteResponse:
      return {
        type: tag === messageTags.requestVoteResponse ? "requestVoteResponse" : "preVoteResponse",
        term,
        from,
        to,
        granted: reader.bool("granted"),
      };
    case messageTags.appendEntries: {
      const prevLogIndex = reader.varint("prevLogIndex");
      const prevLogTerm = reader.varint("prevLogTerm");
      const commitIndex = reader.varint("commitIndex");
      const entries = readEntries(reader, prevLogIndex);
      return {
        type: "appendEntries",
        term,
        from,
        to,
        prevLogIndex,
        prevLogTerm,
        entries,
        commitIndex,
      };
    }
    case messageTags.appendEntriesResponse:
      return {
        type: "appendEntriesResponse",
        term,
        from,
        to,
        success: reader.bool("success"),
        matchIndex: reader.varint("matchIndex"),
        rejectHintIndex: reader.varint("rejectHintIndex"),
        rejectHintTerm: reader.varint("rejectHintTerm"),
      };
    case messageTags.heartbeat:
      return {
        type: "heartbeat",
        term,
        from,
        to,
        commitIndex: reader.varint("commitIndex"),
        context: reader.varint("context"),
      };
    case messageTags.heartbeatResponse:
      return {
        type: "heartbeatResponse",
        term,
        from,
        to,
        context: reader.varint("context"),
        lastIndex: reader.varint("lastIndex"),
      };
    case messageTags.installSnapshot:
      return {
        type: "installSnapshot",
        term,
        from,
        to,
        snapshot: {
          index: reader.varint("snapshot index"),
          term: reader.varint("snapshot term"),
          bytes: reader.varint("snapshot bytes"),
        },
        offset: reader.varint("offset"),
        data: reader.bytes("snapshot data"),
        done: reader.bool("done"),
      };
    case messageTags.installSnapshotResponse:
      return {
        type: "installSnapshotResponse",
        term,
        from,
        to,
        snapshotIndex: reader.varint("snapshotIndex"),
        offset: reader.varint("offset"),
        success: reader.bool("success"),
        done: reader.bool("done"),
      };
    case messageTags.timeoutNow:
      return { type: "timeoutNow", term, from, to };
    case messageTags.readIndex:
      return { type: "readIndex", term, from, to, requestId: reader.varint("requestId") };
    case messageTags.readIndexResponse:
      return {
        type: "readIndexResponse",
        term,
        from,
        to,
        requestId: reader.varint("requestId"),
        index: reader.varint("index"),
      };
    default:
      throw new DecodeError(`Unknown message type tag ${tag}`);
  }
}

// Entries must continue prevLogIndex without gaps, with term >= 1 (Entry's invariant):
// checking here keeps a corrupt peer from tripping the consensus core's assertions.
function readEntries(reader: Reader, prevLogIndex: number): Entry[] {
  const count = reader.varint("entry count");
  if (count > entriesPerMessageMax) {
    throw new DecodeError(
      `Entry count ${count} exceeds the maximum of ${entriesPerMessageMax}`,
    );
  }
  // Checked before allocating anything for the entries.
  if (count * entryBytesMin > reader.remaining) {
    throw new DecodeError(
      `Entry count ${count} needs at least ${
        count * entryBytesMin
      } bytes, only ${reader.remaining} left`,
    );
  }
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const index = reader.varint("entry index");
    if (index !== prevLogIndex + 1 + i) {
      throw new DecodeError(
        `Entry ${i} has index ${index}, expected ${
          prevLogIndex + 1 + i
        } (prevLogIndex ${prevLogIndex})`,
      );
    }
    const term = reader.varint("entry term");
    if (term < 1) throw new DecodeError(`Entry ${index} has term 0`);
    const code = reader.u8("entry kind");
    const kind = entryKinds[code];
    if (kind === undefined) throw new DecodeError(`Unknown entry kind ${code}`);
    entries.push({ index, term, kind, data: reader.bytes("entry data") });
  }
  return entries;
}

// ---- Handshake -------------------------------------------------------------------------

function helloBytesUpperBound(hello: Hello): number {
  let bytes = varintBytesMax * 2 + nameBytesUpperBound(hello.clusterName) +
    nameBytesUpperBound(hello.fingerprint) + nameBytesUpperBound(hello.name) +
    nameBytesUpperBound(hello.incarnation) + 3 + 2 * varintBytesMax + hello.nonce.byteLength +
    hello.auth.byteLength;
  for (const [field, hash] of Object.entries(hello.fingerprintFields)) {
    bytes += nameBytesUpperBound(field) + nameBytesUpperBound(hash);
  }
  return bytes;
}

/** writeHello writes a Hello; sorted: the fingerprint fields by name (for auth input). */
function writeHello(writer: Writer, hello: Hello, sorted = false): void {
  writer.varint(hello.protocolVersion, "protocolVersion");
  writer.name(hello.clusterName, "clusterName");
  writer.name(hello.fingerprint, "fingerprint");
  const fields = Object.entries(hello.fingerprintFields);
  if (sorted) fields.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  assert(
    fields.length <= fingerprintFieldsMax,
    `fingerprintFields has ${fields.length} fields, more than ${fingerprintFieldsMax}`,
  );
  writer.varint(fields.length, "fingerprint field count");
  for (const [field, hash] of fields) {
    writer.name(field, "fingerprint field");
    writer.name(hash, "fingerprint field hash");
  }
  writer.name(hello.name, "name");
  writer.name(hello.incarnation, "incarnation");
  writer.shortBytes(hello.nonce, "nonce");
  writer.shortBytes(hello.auth, "auth");
  writer.u8((hello.hasState ? 1 : 0) | (hello.recovering ? 2 : 0));
  writer.varint(hello.term, "term");
  writer.varint(hello.lastIndex, "lastIndex");
}

function readHello(reader: Reader): Hello {
  const protocolVersion = reader.varint("protocolVersion");
  const clusterName = reader.name("clusterName");
  const fingerprint = reader.name("fingerprint");
  const fieldCount = reader.varint("fingerprint field count");
  if (fieldCount > fingerprintFieldsMax) {
    throw new DecodeError(
      `Fingerprint field count ${fieldCount} exceeds the maximum of ${fingerprintFieldsMax}`,
    );
  }
  const fields = new Map<string, string>();
  for (let i = 0; i < fieldCount; i++) {
    const field = reader.name("fingerprint field");
    const hash = reader.name("fingerprint field hash");
    if (fields.has(field)) throw new DecodeError(`Duplicate fingerprint field "${field}"`);
    fields.set(field, hash);
  }
  return {
    protocolVersion,
    clusterName,
    fingerprint,
    // fromEntries defines own properties, so a field named "__proto__" stays a field.
    fingerprintFields: Object.fromEntries(fields),
    name: reader.name("name"),
    incarnation: reader.name("incarnation"),
    nonce: reader.shortBytes("nonce"),
    auth: reader.shortBytes("auth"),
    ...stateOnly(readStateFlags(reader, 0b011)),
    term: reader.varint("term"),
    lastIndex: reader.varint("lastIndex"),
  };
}

function stateOnly(
  flags: { hasState: boolean; recovering: boolean },
): { hasState: boolean; recovering: boolean } {
  return { hasState: flags.hasState, recovering: flags.recovering };
}

/** readStateFlags reads the hasState/recovering/fenced bits, refusing unknown bits. */
function readStateFlags(
  reader: Reader,
  allowed: number,
): { hasState: boolean; recovering: boolean; fenced: boolean; rolledBack: boolean } {
  const flags = reader.u8("state flags");
  if ((flags & ~allowed) !== 0) throw new DecodeError(`Unknown state flags ${flags}`);
  return {
    hasState: (flags & 1) !== 0,
    recovering: (flags & 2) !== 0,
    fenced: (flags & 4) !== 0,
    rolledBack: (flags & 8) !== 0,
  };
}

function helloReplyBytesUpperBound(reply: HelloReply): number {
  let bytes = 4 + 2 + 3 * (reply.reason?.length ?? 0) + varintBytesMax +
    nameBytesUpperBound(reply.name) + nameBytesUpperBound(reply.incarnation) + 1 +
    reply.auth.byteLength;
  for (const field of reply.differingFields ?? []) bytes += nameBytesUpperBound(field);
  return bytes;
}

function writeHelloReply(writer: Writer, reply: HelloReply): void {
  writer.bool(reply.accepted);
  writer.bool(reply.reason !== undefined);
  if (reply.reason !== undefined) writer.reason(reply.reason);
  writer.bool(reply.differingFields !== undefined);
  if (reply.differingFields !== undefined) {
    assert(
      reply.differingFields.length <= fingerprintFieldsMax,
      `differingFields has more than ${fingerprintFieldsMax} fields`,
    );
    writer.varint(reply.differingFields.length, "differing field count");
    for (const field of reply.differingFields) writer.name(field, "differing field");
  }
  writer.name(reply.name, "name");
  writer.name(reply.incarnation, "incarnation");
  writer.u8(
    (reply.hasState ? 1 : 0) | (reply.recovering ? 2 : 0) | (reply.fenced ? 4 : 0) |
      (reply.rolledBack ? 8 : 0),
  );
  writer.shortBytes(reply.auth, "auth");
}

function readHelloReply(reader: Reader): HelloReply {
  const accepted = reader.bool("accepted");
  const reason = reader.bool("reason present") ? reader.reason() : undefined;
  let differingFields: string[] | undefined;
  if (reader.bool("differingFields present")) {
    const count = reader.varint("differing field count");
    if (count > fingerprintFieldsMax) {
      throw new DecodeError(
        `Differing field count ${count} exceeds the maximum of ${fingerprintFieldsMax}`,
      );
    }
    differingFields = [];
    for (let i = 0; i < count; i++) differingFields.push(reader.name("differing field"));
  }
  const name = reader.name("name");
  const incarnation = reader.name("incarnation");
  const reply: HelloReply = {
    accepted,
    name,
    incarnation,
    ...readStateFlags(reader, 0b1111),
    auth: reader.shortBytes("auth"),
  };
  if (reason !== undefined) reply.reason = reason;
  if (differingFields !== undefined) reply.differingFields = differingFields;
  return reply;
}

// ---- Writer and Reader -----------------------------------------------------------------
// Hot paths: messages for errors are built only when failing, never per field.

const textEncoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of a name, not a byte-order mark to strip.
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function nameBytesUpperBound(name: string): number {
  return 1 + 3 * name.length;
}

/** encodeBug reports a value that cannot be encoded: a local bug, never caught. */
function encodeBug(message: string): never {
  throw new AssertionError(message);
}

/**
 * Writer appends to a byte buffer sized from an upper bound, so it rarely grows. Encoding
 * bad values (a negative term, a 300-byte name) is a local bug: it asserts.
 */
class Writer {
  #bytes: Uint8Array;
  #offset = 0;

  constructor(capacity: number) {
    this.#bytes = new Uint8Array(capacity);
  }

  finish(): Uint8Array {
    return this.#bytes.subarray(0, this.#offset);
  }

  /** finishFrame fills in the length prefix reserved by skip(frameHeaderBytes). */
  finishFrame(): Uint8Array {
    const payloadBytes = this.#offset - frameHeaderBytes;
    checkFrameBytes(payloadBytes, frameBytesMax);
    writeFrameHeader(this.#bytes, 0, payloadBytes);
    return this.#bytes.subarray(0, this.#offset);
  }

  skip(count: number): void {
    this.#ensure(count);
    this.#offset += count;
  }

  u8(value: number): void {
    this.#ensure(1);
    this.#bytes[this.#offset++] = value;
  }

  bool(value: boolean): void {
    this.u8(value ? 1 : 0);
  }

  varint(value: number, what: string): void {
    if (!(Number.isSafeInteger(value) && value >= 0)) {
      encodeBug(`${what} must be a non-negative safe integer: ${value}`);
    }
    this.#ensure(varintBytesMax);
    const bytes = this.#bytes;
    let offset = this.#offset;
    // Above 2^31 bit operations would wrap, so divide; below, shift.
    while (value > 0x7fff_ffff) {
      bytes[offset++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    while (value > 0x7f) {
      bytes[offset++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    bytes[offset++] = value;
    this.#offset = offset;
  }

  /** name writes a u8 length and UTF-8; names are 1..nameBytesMax bytes. */
  name(text: string, what: string): void {
    const start = this.#offset + 1;
    const length = this.#utf8(text, start);
    if (length < 1 || length > nameBytesMax) {
      encodeBug(`${what} must be 1 to ${nameBytesMax} bytes of UTF-8, not ${length}`);
    }
    this.#bytes[start - 1] = length;
    this.#offset = start + length;
  }

  /** reason writes a u16 big-endian length and UTF-8, up to reasonBytesMax bytes. */
  reason(text: string): void {
    const start = this.#offset + 2;
    const length = this.#utf8(text, start);
    if (length > reasonBytesMax) encodeBug(`reason must be at most ${reasonBytesMax} bytes`);
    this.#bytes[start - 2] = length >>> 8;
    this.#bytes[start - 1] = length & 0xff;
    this.#offset = start + length;
  }

  /** bytes writes a varint length and the raw bytes. */
  bytes(data: Uint8Array): void {
    this.varint(data.byteLength, "byte length");
    this.#ensure(data.byteLength);
    this.#bytes.set(data, this.#offset);
    this.#offset += data.byteLength;
  }

  /** shortBytes writes a u8 length and the raw bytes, up to nonceBytesMax. */
  shortBytes(data: Uint8Array, what: string): void {
    if (data.byteLength > nonceBytesMax) {
      encodeBug(`${what} must be at most ${nonceBytesMax} bytes`);
    }
    this.u8(data.byteLength);
    this.#ensure(data.byteLength);
    this.#bytes.set(data, this.#offset);
    this.#offset += data.byteLength;
  }

  /** #utf8 writes text as UTF-8 at start (leaving room before it) and returns its length. */
  #utf8(text: string, start: number): number {
    const room = 3 * text.length;
    this.#ensure(start - this.#offset + room);
    const bytes = this.#bytes;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) {
        return textEncoder.encodeInto(text, bytes.subarray(start, start + room)).written;
      }
      bytes[start + i] = code;
    }
    return text.length;
  }

  #ensure(count: number): void {
    const needed = this.#offset + count;
    if (needed <= this.#bytes.byteLength) return;
    const grown = new Uint8Array(Math.max(needed, 2 * this.#bytes.byteLength));
    grown.set(this.#bytes.subarray(0, this.#offset));
    this.#bytes = grown;
  }
}

/**
 * NameCache remembers recently decoded names by their bytes. A cluster has a handful of
 * members and every message carries two of their names, so decoding them is mostly a
 * short byte comparison. Bounded: nameCacheEntriesMax names of up to nameCacheBytesMax.
 */
const nameCacheEntriesMax = 32;
const nameCacheBytesMax = 64;
const nameCacheBytes: Uint8Array[] = [];
const nameCacheTexts: string[] = [];
let nameCacheNext = 0;

function cachedName(source: Uint8Array, start: number, length: number): string | undefined {
  search: for (let i = 0; i < nameCacheBytes.length; i++) {
    const candidate = nameCacheBytes[i]!;
    if (candidate.byteLength !== length) continue;
    for (let j = 0; j < length; j++) {
      if (candidate[j] !== source[start + j]) continue search;
    }
    return nameCacheTexts[i];
  }
  return undefined;
}

function rememberName(bytes: Uint8Array, text: string): void {
  if (bytes.byteLength > nameCacheBytesMax) return;
  nameCacheBytes[nameCacheNext] = bytes.slice();
  nameCacheTexts[nameCacheNext] = text;
  nameCacheNext = (nameCacheNext + 1) % nameCacheEntriesMax;
}

/** Reader consumes bytes front to back; every read checks the bounds first. */
class Reader {
  readonly #bytes: Uint8Array;
  #offset = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  get remaining(): number {
    return this.#bytes.byteLength - this.#offset;
  }

  /** end rejects trailing bytes. */
  end(what: string): void {
    if (this.remaining !== 0) {
      throw new DecodeError(`${this.remaining} trailing bytes after the ${what}`);
    }
  }

  u8(what: string): number {
    if (this.#offset >= this.#bytes.byteLength) throw this.#truncated(what, 1);
    return this.#bytes[this.#offset++]!;
  }

  bool(what: string): boolean {
    const value = this.u8(what);
    if (value > 1) throw new DecodeError(`Invalid boolean ${value} for ${what}`);
    return value === 1;
  }

  /** varint reads a safe integer; `suffix` completes `what` in error messages. */
  varint(what: string, suffix = ""): number {
    const bytes = this.#bytes;
    let offset = this.#offset;
    if (offset < bytes.byteLength && bytes[offset]! < 0x80) {
      this.#offset = offset + 1;
      return bytes[offset]!;
    }
    let value = 0;
    let scale = 1;
    for (let i = 0; i < varintBytesMax; i++) {
      if (offset >= bytes.byteLength) {
        this.#offset = offset;
        throw this.#truncated(what + suffix, 1);
      }
      const byte = bytes[offset++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        this.#offset = offset;
        if (byte === 0) throw new DecodeError(`Overlong varint for ${what}${suffix}`);
        // Beyond 2^53 the sum may round, but never down to a safe integer.
        if (value > Number.MAX_SAFE_INTEGER) {
          throw new DecodeError(`Varint for ${what}${suffix} exceeds the maximum safe integer`);
        }
        return value;
      }
      scale *= 0x80;
    }
    this.#offset = offset;
    throw new DecodeError(
      `Varint for ${what}${suffix} is longer than ${varintBytesMax} bytes`,
    );
  }

  name(what: string): string {
    const bytes = this.#bytes;
    const offset = this.#offset;
    if (offset >= bytes.byteLength) throw this.#truncated(`${what} length`, 1);
    const length = bytes[offset]!;
    if (length === 0) throw new DecodeError(`Empty ${what}`);
    const start = offset + 1;
    if (length > bytes.byteLength - start) {
      this.#offset = start;
      throw this.#truncated(what, length);
    }
    const cached = cachedName(bytes, start, length);
    if (cached !== undefined) {
      this.#offset = start + length;
      return cached;
    }
    this.#offset = start;
    const text = this.#text(length, what);
    rememberName(bytes.subarray(start, start + length), text);
    return text;
  }

  reason(): string {
    const length = this.u8("reason length") * 0x100 + this.u8("reason length");
    if (length > reasonBytesMax) {
      throw new DecodeError(`Reason of ${length} bytes exceeds the maximum of ${reasonBytesMax}`);
    }
    return this.#text(length, "reason");
  }

  bytes(what: string): Uint8Array {
    const length = this.varint(what, " length");
    return this.#take(length, what);
  }

  shortBytes(what: string): Uint8Array {
    const length = this.u8(what);
    if (length > nonceBytesMax) {
      throw new DecodeError(`${what} of ${length} bytes exceeds the maximum of ${nonceBytesMax}`);
    }
    return this.#take(length, what);
  }

  #take(length: number, what: string): Uint8Array {
    if (length > this.remaining) throw this.#truncated(what, length);
    const start = this.#offset;
    this.#offset += length;
    return this.#bytes.subarray(start, start + length);
  }

  #text(length: number, what: string): string {
    const bytes = this.#take(length, what);
    for (let i = 0; i < bytes.byteLength; i++) {
      if (bytes[i]! >= 0x80) {
        try {
          return textDecoder.decode(bytes);
        } catch (error: unknown) {
          if (error instanceof TypeError) throw new DecodeError(`Invalid UTF-8 in ${what}`);
          throw error;
        }
      }
    }
    return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }

  #truncated(what: string, needed: number): DecodeError {
    return new DecodeError(
      `Truncated input: ${what} needs ${needed} bytes at offset ${this.#offset}, ${this.remaining} left`,
    );
  }
}
