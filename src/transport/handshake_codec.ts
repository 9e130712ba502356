// Binary encoding of the handshake's Hello and HelloReply (field encodings: wire.ts).
// Pure: no I/O.
//
//   Hello       varint protocolVersion, name clusterName, name fingerprint, varint field
//               count (..fingerprintFieldsMax) then (name field, name hash) pairs, name
//               name, name incarnation, short nonce, short auth, u8 flags (1 hasState,
//               2 recovering), varint term, varint lastIndex
//   HelloReply  bool accepted, bool has-reason [reason], bool has-fields [varint count,
//               names], name name, name incarnation, u8 flags (1 hasState, 2 recovering,
//               4 fenced, 8 rolledBack), short auth
//
// Unknown flag bits and duplicate fingerprint fields are DecodeErrors.

import { assert } from "../lib/assert.ts";
import type { Hello, HelloReply } from "./handshake_types.ts";
import { fingerprintFieldsMax } from "./limits.ts";
import { DecodeError, nameBytesUpperBound, Reader, varintBytesMax, Writer } from "./wire.ts";

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

export function helloBytesUpperBound(hello: Hello): number {
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
export function writeHello(writer: Writer, hello: Hello, sorted = false): void {
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

export function readHello(reader: Reader): Hello {
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

export function helloReplyBytesUpperBound(reply: HelloReply): number {
  let bytes = 4 + 2 + 3 * (reply.reason?.length ?? 0) + varintBytesMax +
    nameBytesUpperBound(reply.name) + nameBytesUpperBound(reply.incarnation) + 1 +
    reply.auth.byteLength;
  for (const field of reply.differingFields ?? []) bytes += nameBytesUpperBound(field);
  return bytes;
}

export function writeHelloReply(writer: Writer, reply: HelloReply): void {
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

export function readHelloReply(reader: Reader): HelloReply {
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
