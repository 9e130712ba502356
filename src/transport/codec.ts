// Frame payloads of the peer protocol, and the codec's public face. Pure: no I/O.
//
// A frame payload starts with a kind byte:
//   1 hello        Hello (handshake_codec.ts)
//   2 helloReply   HelloReply (handshake_codec.ts)
//   3 message      one Message (message_codec.ts)
//   4 batch        varint count (1..batchMessagesMax), then that many Messages back to back
//   5 challenge    u8 length (exactly nonceBytes), then the acceptor's nonce
//
// The rooms below it: wire.ts (the writer and reader, field encodings), message_codec.ts,
// handshake_codec.ts, auth_input.ts (the bytes under each HMAC). decode* validate
// everything and throw DecodeError on any malformed input: an unknown tag or kind, a
// truncated field, an overlong or unsafe varint, invalid UTF-8, a count or length beyond
// its limit, entries that are not contiguous after prevLogIndex, trailing bytes. Decoded
// Uint8Array fields (entry data, snapshot chunk data) are views of the input, which must
// not be modified afterwards.

import { assert } from "../lib/assert.ts";
import type { Message } from "../consensus/types.ts";
import { frameHeaderBytes } from "./frame.ts";
import type { Challenge, Hello, HelloReply } from "./handshake_types.ts";
import {
  helloBytesUpperBound,
  helloReplyBytesUpperBound,
  readHello,
  readHelloReply,
  writeHello,
  writeHelloReply,
} from "./handshake_codec.ts";
import { batchMessagesMax, nonceBytes } from "./limits.ts";
import { messageBytesUpperBound, readMessage, writeMessage } from "./message_codec.ts";
import { DecodeError, Reader, varintBytesMax, Writer } from "./wire.ts";

export { DecodeError } from "./wire.ts";
export { decodeMessage, encodeMessage, messageBytesUpperBound } from "./message_codec.ts";
export { decodeHello, decodeHelloReply, encodeHello, encodeHelloReply } from "./handshake_codec.ts";
export {
  encodeHelloAuthInput,
  encodeReplyAuthInput,
  helloAuthLabel,
  replyAuthLabel,
} from "./auth_input.ts";

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
  const frame = readFrame(reader);
  reader.end("frame");
  return frame;
}

function readFrame(reader: Reader): Frame {
  const kind = reader.u8("frame kind");
  switch (kind) {
    case FrameKind.hello:
      return { kind: "hello", hello: readHello(reader) };
    case FrameKind.helloReply:
      return { kind: "helloReply", reply: readHelloReply(reader) };
    case FrameKind.challenge:
      return { kind: "challenge", challenge: { nonce: readChallengeNonce(reader) } };
    case FrameKind.message:
      return { kind: "messages", messages: [readMessage(reader)] };
    case FrameKind.batch:
      return { kind: "messages", messages: readBatch(reader) };
    default:
      throw new DecodeError(`Unknown frame kind ${kind}`);
  }
}

function readChallengeNonce(reader: Reader): Uint8Array {
  const nonce = reader.shortBytes("challenge nonce");
  if (nonce.byteLength !== nonceBytes) {
    throw new DecodeError(
      `Challenge nonce of ${nonce.byteLength} bytes; it must be ${nonceBytes} bytes`,
    );
  }
  return nonce;
}

function readBatch(reader: Reader): Message[] {
  const count = reader.varint("batch count");
  if (count < 1 || count > batchMessagesMax) {
    throw new DecodeError(
      `Batch of ${count} messages is outside the allowed range 1..${batchMessagesMax}`,
    );
  }
  const messages: Message[] = [];
  for (let i = 0; i < count; i++) messages.push(readMessage(reader));
  return messages;
}
