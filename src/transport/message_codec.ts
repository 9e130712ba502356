// Binary encoding of consensus messages. Pure: no I/O.
//
// A Message is: u8 type tag, varint term, name from, name to, then its own fields in the
// order of the interfaces in consensus/types.ts (field encodings: wire.ts). An entry is
// varint index, varint term, u8 kind (0 noop, 1 command, 2 fence), bytes data.
//
// readMessage validates everything and throws DecodeError on an unknown tag or kind,
// entries that are not contiguous after prevLogIndex, an entry of term 0, or a count
// beyond its limit. Decoded Uint8Array fields (entry data, snapshot chunk data) are
// views of the input, which must not be modified afterwards.

import { unreachable } from "../lib/assert.ts";
import type { Entry, EntryKind, Message, MessageType } from "../consensus/types.ts";
import { entriesPerMessageMax } from "./limits.ts";
import { DecodeError, nameBytesUpperBound, Reader, varintBytesMax, Writer } from "./wire.ts";

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

const entryKindCodes: Readonly<Record<EntryKind, number>> = {
  noop: 0,
  command: 1,
  fence: 2,
};

const messageTagMin = 1;
const messageTagMax = 13;

const entryKinds: readonly EntryKind[] = ["noop", "command", "fence"];

/** Smallest possible encoded entry: 1-byte index, term, kind and data length. */
const entryBytesMin = 4;
/** Upper bound of a message's fixed part: tag, at most 8 varints, at most 4 bools. */
const messageFixedBytesMax = 1 + 8 * varintBytesMax + 4;
/** Upper bound of an entry apart from its data: index, term, kind, data length. */
const entryFixedBytesMax = 3 * varintBytesMax + 1;

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

/** writeMessage appends one message: its common head, then its own fields. */
export function writeMessage(writer: Writer, message: Message): void {
  writer.u8(messageTags[message.type]);
  writer.varint(message.term, "term");
  writer.name(message.from, "from");
  writer.name(message.to, "to");
  writeMessageFields(writer, message);
}

// One case per message type, in the order of consensus/types.ts: long, but flat.
function writeMessageFields(writer: Writer, message: Message): void {
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
      writeEntries(writer, message.entries);
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

function writeEntries(writer: Writer, entries: readonly Entry[]): void {
  writer.varint(entries.length, "entry count");
  for (const entry of entries) {
    writer.varint(entry.index, "entry index");
    writer.varint(entry.term, "entry term");
    writer.u8(entryKindCodes[entry.kind]);
    writer.bytes(entry.data);
  }
}

/**
 * readMessage reads one message; throws DecodeError. One flat switch, long on purpose:
 * it is the receive path's hot loop, and object literals built in place are several
 * times faster than a table of readers spreading a common head.
 */
export function readMessage(reader: Reader): Message {
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
  for (let i = 0; i < count; i++) entries.push(readEntry(reader, prevLogIndex, i));
  return entries;
}

/** readEntry reads the entry at `position` after prevLogIndex; it must be the next index. */
function readEntry(reader: Reader, prevLogIndex: number, position: number): Entry {
  const index = reader.varint("entry index");
  if (index !== prevLogIndex + 1 + position) {
    throw new DecodeError(
      `Entry ${position} has index ${index}, expected ${
        prevLogIndex + 1 + position
      } (prevLogIndex ${prevLogIndex})`,
    );
  }
  const term = reader.varint("entry term");
  if (term < 1) throw new DecodeError(`Entry ${index} has term 0`);
  const code = reader.u8("entry kind");
  const kind = entryKinds[code];
  if (kind === undefined) throw new DecodeError(`Unknown entry kind ${code}`);
  return { index, term, kind, data: reader.bytes("entry data") };
}
