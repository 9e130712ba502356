// The exact bytes under each handshake HMAC (handshake.ts signs and checks them). Pure.

import type { Hello, HelloReply } from "./handshake_types.ts";
import {
  helloBytesUpperBound,
  helloReplyBytesUpperBound,
  writeHello,
  writeHelloReply,
} from "./handshake_codec.ts";
import { nameBytesUpperBound, Writer } from "./wire.ts";

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
