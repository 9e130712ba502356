// The built-in key-value service: an in-memory map from string keys to byte values, each
// with the log index of its last write (its modification index). Commands and results are
// compact binary records so that they cost little in the log and on the wire.
//
// Command layout (all integers big-endian):
//   put:    u8 1, u16 keyBytes, key (UTF-8), u32 valueBytes, value
//   delete: u8 2, u16 keyBytes, key
//   cas:    u8 3, u16 keyBytes, key, u8 flags (bit 0: expected given, bit 1: value given),
//           [u32 expectedBytes, expected], [u32 valueBytes, value]
// Result layout:
//   error:  u8 0, message (UTF-8, the rest)
//   put:    u8 1, u64 index
//   delete: u8 2, u8 deleted, u64 index
//   cas:    u8 3, u8 ok, u64 index, and when not ok: u8 present, [u32 bytes, current]
// Snapshot layout:
//   "KVS1", u32 count, then count times in strictly increasing key order:
//   u16 keyBytes, key, u64 modIndex, u32 valueBytes, value
//
// Keys are ordered by JavaScript string comparison (UTF-16 code units); list() and the
// snapshot use that order, which is the same on every replica.

import { assert } from "../lib/assert.ts";
import { bytesCodec, type LogPosition, type Service, type ServiceCodec } from "./service.ts";
import { ByteReader } from "../lib/byte_reader.ts";

/** kvKeyBytesMax bounds a key's UTF-8 length; keys are also non-empty. */
export const kvKeyBytesMax = 4096;
/** kvValueBytesMax bounds a value; larger values are refused by apply. */
export const kvValueBytesMax = 64 * 1024 * 1024;
/** kvListLimitMax bounds the number of items one list() call returns. */
export const kvListLimitMax = 1000;

const opPut = 1;
const opDelete = 2;
const opCas = 3;
const resultError = 0;
const casHasExpected = 1;
const casHasValue = 2;
const snapshotMagic = "KVS1";

/** KvEntry is one stored value with the log index of the write that produced it. */
export interface KvEntry {
  value: Uint8Array;
  modIndex: number;
}

/** KvItem is one row of a list() answer. */
export interface KvItem extends KvEntry {
  key: string;
}

/** KvResult is a decoded apply result. `index` is the log index the command was applied at. */
export type KvResult =
  | { type: "error"; message: string }
  | { type: "put"; ok: true; index: number }
  | { type: "delete"; deleted: boolean; index: number }
  | { type: "cas"; ok: true; index: number }
  | { type: "cas"; ok: false; index: number; current: Uint8Array | null };

/**
 * kvCodec is kv's codec for POST /v1/command: the body is a command in the binary layout
 * above, checked before it is proposed (a malformed one is 400 and never reaches the log),
 * and the answer is the result's layout. kv has no queries.
 */
export const kvCodec: ServiceCodec = {
  request(body: Uint8Array): Uint8Array {
    const problem = validateCommand(body);
    if (problem !== undefined) throw new Error(problem);
    return body;
  },
  response: bytesCodec.response,
};

/** KvService is the built-in key-value state machine. */
export class KvService implements Service {
  /** POST /v1/command takes the binary command layout above, and answers the result's. */
  readonly codec: ServiceCodec = kvCodec;
  #entries = new Map<string, KvEntry>();
  #keys = new SortedKeys();

  /** size is the number of keys stored. */
  get size(): number {
    return this.#entries.size;
  }

  // kv needs only the entry's index (its modification index): no time, no timers.
  apply(command: Uint8Array, context: LogPosition): Uint8Array {
    let decoded: KvCommand;
    try {
      decoded = decodeCommand(command);
    } catch (error: unknown) {
      if (error instanceof DecodeError) {
        return encodeError(`Malformed kv command: ${error.message}`);
      }
      throw error;
    }
    const index = context.index;
    switch (decoded.op) {
      case "put":
        this.#set(decoded.key, decoded.value, index);
        return encodeResult({ type: "put", ok: true, index });
      case "delete":
        return encodeResult({ type: "delete", deleted: this.#delete(decoded.key), index });
      case "cas": {
        const current = this.#entries.get(decoded.key);
        const matches = decoded.expected === null
          ? current === undefined
          : current !== undefined && bytesEqual(current.value, decoded.expected);
        if (!matches) {
          return encodeResult({ type: "cas", ok: false, index, current: current?.value ?? null });
        }
        if (decoded.value === null) this.#delete(decoded.key);
        else this.#set(decoded.key, decoded.value, index);
        return encodeResult({ type: "cas", ok: true, index });
      }
    }
  }

  /** get reads local state; the caller decides whether a read barrier came first. */
  get(key: string): KvEntry | undefined {
    return this.#entries.get(key);
  }

  /**
   * list returns up to `limit` items whose key starts with `prefix`, in key order, starting
   * after the key `after` when given; `more` says whether further items match.
   */
  list(prefix: string, limit: number, after?: string): { items: KvItem[]; more: boolean } {
    assert(Number.isInteger(limit) && limit >= 1, "list limit must be a positive integer");
    const start = after !== undefined && after >= prefix
      ? { key: after, inclusive: false }
      : { key: prefix, inclusive: true };
    const items: KvItem[] = [];
    for (const key of this.#keys.from(start.key, start.inclusive)) {
      if (!key.startsWith(prefix)) break;
      if (items.length === limit) return { items, more: true };
      const entry = this.#entries.get(key);
      assert(entry !== undefined, "every sorted key must have an entry");
      items.push({ key, value: entry.value, modIndex: entry.modIndex });
    }
    return { items, more: false };
  }

  snapshot(): Uint8Array {
    // Sized up front: growing a buffer of a large state by doubling copies it many times.
    let bytes = snapshotMagic.length + 4;
    for (const [key, entry] of this.#entries) {
      bytes += 2 + key.length * 3 + 8 + 4 + entry.value.length; // UTF-8: <= 3 bytes a unit
    }
    const writer = new ByteWriter(bytes);
    writer.bytes(textEncoder.encode(snapshotMagic));
    writer.u32(this.#entries.size);
    for (const key of this.#keys.from("", true)) {
      const entry = this.#entries.get(key);
      assert(entry !== undefined, "every sorted key must have an entry");
      writer.key(key);
      writer.u64(entry.modIndex);
      writer.u32(entry.value.length);
      writer.bytes(entry.value);
    }
    return writer.finish();
  }

  restore(data: Uint8Array): void {
    // Decode everything before touching state so that a bad snapshot changes nothing.
    const reader = new ByteReader(data, (message) => new DecodeError(message));
    let entries: Map<string, KvEntry>;
    let keys: string[];
    try {
      const magic = textDecoder.decode(reader.bytes(snapshotMagic.length));
      if (magic !== snapshotMagic) throw new DecodeError(`unknown format ${JSON.stringify(magic)}`);
      const count = reader.u32();
      entries = new Map();
      keys = [];
      let previous: string | undefined;
      for (let i = 0; i < count; i++) {
        const key = decodeKey(reader.bytes(reader.u16()));
        if (previous !== undefined && !(previous < key)) {
          throw new DecodeError(`key ${JSON.stringify(key)} is out of order`);
        }
        const modIndex = reader.u64();
        const value = reader.bytes(reader.u32()).slice();
        entries.set(key, { value, modIndex });
        keys.push(key);
        previous = key;
      }
      reader.end();
    } catch (error: unknown) {
      // TypeError: bytes that are not UTF-8 where text is expected.
      if (error instanceof DecodeError || error instanceof TypeError) {
        throw new Error(`Invalid kv snapshot of ${data.length} bytes: ${error.message}`);
      }
      throw error;
    }
    this.#entries = entries;
    this.#keys = SortedKeys.fromSorted(keys);
  }

  #set(key: string, value: Uint8Array, modIndex: number): void {
    if (!this.#entries.has(key)) this.#keys.insert(key);
    this.#entries.set(key, { value, modIndex });
  }

  #delete(key: string): boolean {
    if (!this.#entries.delete(key)) return false;
    this.#keys.remove(key);
    return true;
  }
}

// ---- Commands -------------------------------------------------------------------------

type KvCommand =
  | { op: "put"; key: string; value: Uint8Array }
  | { op: "delete"; key: string }
  | { op: "cas"; key: string; expected: Uint8Array | null; value: Uint8Array | null };

/** encodePut makes a command that stores value under key. */
export function encodePut(key: string, value: Uint8Array): Uint8Array {
  const writer = new ByteWriter(1 + 2 + key.length * 3 + 4 + value.length);
  writer.u8(opPut);
  writeKey(writer, key);
  writeValue(writer, value);
  return writer.finish();
}

/** encodeDelete makes a command that removes key. */
export function encodeDelete(key: string): Uint8Array {
  const writer = new ByteWriter();
  writer.u8(opDelete);
  writeKey(writer, key);
  return writer.finish();
}

/**
 * encodeCas makes a compare-and-set command: if the current value equals `expected` (null:
 * the key is absent), set it to `value` (null: delete the key).
 */
export function encodeCas(
  key: string,
  expected: Uint8Array | null,
  value: Uint8Array | null,
): Uint8Array {
  const writer = new ByteWriter();
  writer.u8(opCas);
  writeKey(writer, key);
  writer.u8((expected === null ? 0 : casHasExpected) | (value === null ? 0 : casHasValue));
  if (expected !== null) writeValue(writer, expected);
  if (value !== null) writeValue(writer, value);
  return writer.finish();
}

/**
 * validateCommand returns why bytes are not a kv command (the message apply would answer),
 * or undefined when they are one.
 */
export function validateCommand(command: Uint8Array): string | undefined {
  try {
    decodeCommand(command);
    return undefined;
  } catch (error: unknown) {
    if (error instanceof DecodeError) return `Malformed kv command: ${error.message}`;
    throw error;
  }
}

/**
 * validateKey returns why key is not acceptable, or undefined when it is. Callers check
 * keys before encoding so that a bad key is a client error, not a wasted log entry.
 */
export function validateKey(key: string): string | undefined {
  if (key.length === 0) return "Key must not be empty";
  // Checked first: the byte count below assumes well-formed UTF-16.
  if (!key.isWellFormed()) return "Key must be valid Unicode (no lone surrogates)";
  const bytes = utf8Length(key);
  if (bytes > kvKeyBytesMax) {
    return `Key of ${bytes} bytes exceeds the maximum of ${kvKeyBytesMax} bytes`;
  }
  return undefined;
}

/** utf8Length is the UTF-8 size of a well-formed string, without encoding it. */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      bytes += 4; // a surrogate pair: one 4-byte code point
      i++;
    } else bytes += 3;
  }
  return bytes;
}

function writeKey(writer: ByteWriter, key: string): void {
  const problem = validateKey(key);
  if (problem !== undefined) throw new RangeError(problem);
  writer.key(key);
}

function writeValue(writer: ByteWriter, value: Uint8Array): void {
  if (value.length > kvValueBytesMax) {
    throw new RangeError(
      `Value of ${value.length} bytes exceeds the maximum of ${kvValueBytesMax} bytes`,
    );
  }
  writer.u32(value.length);
  writer.bytes(value);
}

function decodeCommand(command: Uint8Array): KvCommand {
  const reader = new ByteReader(command, (message) => new DecodeError(message));
  const op = reader.u8();
  const key = decodeKey(reader.bytes(reader.u16()));
  let decoded: KvCommand;
  switch (op) {
    case opPut:
      decoded = { op: "put", key, value: readValue(reader) };
      break;
    case opDelete:
      decoded = { op: "delete", key };
      break;
    case opCas: {
      const flags = reader.u8();
      if ((flags & ~(casHasExpected | casHasValue)) !== 0) {
        throw new DecodeError(`unknown cas flags ${flags}`);
      }
      const expected = (flags & casHasExpected) !== 0 ? readValue(reader) : null;
      const value = (flags & casHasValue) !== 0 ? readValue(reader) : null;
      decoded = { op: "cas", key, expected, value };
      break;
    }
    default:
      throw new DecodeError(`unknown op ${op}`);
  }
  reader.end();
  return decoded;
}

function decodeKey(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new DecodeError("empty key");
  if (bytes.length > kvKeyBytesMax) {
    throw new DecodeError(`key of ${bytes.length} bytes exceeds the maximum of ${kvKeyBytesMax}`);
  }
  try {
    return textDecoder.decode(bytes);
  } catch {
    throw new DecodeError("key is not valid UTF-8");
  }
}

function readValue(reader: ByteReader): Uint8Array {
  const length = reader.u32();
  if (length > kvValueBytesMax) {
    throw new DecodeError(`value of ${length} bytes exceeds the maximum of ${kvValueBytesMax}`);
  }
  // Copy: the command buffer belongs to the log and may be reused.
  return reader.bytes(length).slice();
}

// ---- Results --------------------------------------------------------------------------

function encodeError(message: string): Uint8Array {
  return encodeResult({ type: "error", message });
}

function encodeResult(result: KvResult): Uint8Array {
  const writer = new ByteWriter();
  switch (result.type) {
    case "error":
      writer.u8(resultError);
      writer.bytes(textEncoder.encode(result.message));
      break;
    case "put":
      writer.u8(opPut);
      writer.u64(result.index);
      break;
    case "delete":
      writer.u8(opDelete);
      writer.u8(result.deleted ? 1 : 0);
      writer.u64(result.index);
      break;
    case "cas":
      writer.u8(opCas);
      writer.u8(result.ok ? 1 : 0);
      writer.u64(result.index);
      if (!result.ok) {
        writer.u8(result.current === null ? 0 : 1);
        if (result.current !== null) {
          writer.u32(result.current.length);
          writer.bytes(result.current);
        }
      }
      break;
  }
  return writer.finish();
}

/** decodeKvResult reads the result bytes of KvService.apply; it throws on malformed bytes. */
export function decodeKvResult(bytes: Uint8Array): KvResult {
  const reader = new ByteReader(bytes, (message) => new DecodeError(message));
  try {
    const tag = reader.u8();
    let result: KvResult;
    switch (tag) {
      case resultError:
        return { type: "error", message: textDecoder.decode(reader.rest()) };
      case opPut:
        result = { type: "put", ok: true, index: reader.u64() };
        break;
      case opDelete: {
        const deleted = reader.u8() !== 0;
        result = { type: "delete", deleted, index: reader.u64() };
        break;
      }
      case opCas: {
        const ok = reader.u8() !== 0;
        const index = reader.u64();
        if (ok) {
          result = { type: "cas", ok, index };
        } else {
          const current = reader.u8() === 0 ? null : reader.bytes(reader.u32()).slice();
          result = { type: "cas", ok, index, current };
        }
        break;
      }
      default:
        throw new DecodeError(`unknown result tag ${tag}`);
    }
    reader.end();
    return result;
  } catch (error: unknown) {
    if (error instanceof DecodeError) {
      throw new Error(`Invalid kv result of ${bytes.length} bytes: ${error.message}`);
    }
    throw error;
  }
}

// ---- Bytes ----------------------------------------------------------------------------

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const twoTo32 = 2 ** 32;

/** DecodeError marks bytes that do not follow the layout; apply turns it into a result. */
class DecodeError extends Error {
  override name = "DecodeError";
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Byte arithmetic rather than a DataView: writers are made per command and per result,
// where creating a view costs more than the writes.
class ByteWriter {
  #buffer: Uint8Array;
  #length = 0;

  constructor(capacity = 64) {
    this.#buffer = new Uint8Array(capacity);
  }

  u8(value: number): void {
    this.#reserve(1);
    this.#buffer[this.#length++] = value;
  }

  u16(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff, "u16 out of range");
    this.#reserve(2);
    this.#setU16(this.#length, value);
    this.#length += 2;
  }

  u32(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value < twoTo32, "u32 out of range");
    this.#reserve(4);
    const buffer = this.#buffer;
    const at = this.#length;
    buffer[at] = value >>> 24;
    buffer[at + 1] = value >>> 16;
    buffer[at + 2] = value >>> 8;
    buffer[at + 3] = value;
    this.#length += 4;
  }

  /** u64 writes a non-negative safe integer as two u32 halves. */
  u64(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, "u64 must be a non-negative safe integer");
    this.u32(Math.floor(value / twoTo32));
    this.u32(value >>> 0);
  }

  bytes(value: Uint8Array): void {
    this.#reserve(value.length);
    this.#buffer.set(value, this.#length);
    this.#length += value.length;
  }

  /** key writes a u16 length and the key's UTF-8, without an encoder call for ASCII. */
  key(key: string): void {
    this.#reserve(2 + key.length * 3);
    const buffer = this.#buffer;
    const start = this.#length + 2;
    let at = start;
    for (let i = 0; i < key.length; i++) {
      const unit = key.charCodeAt(i);
      if (unit >= 0x80) {
        at = start + textEncoder.encodeInto(key, buffer.subarray(start)).written;
        break;
      }
      buffer[at++] = unit;
    }
    const length = at - start;
    assert(length <= 0xffff, "u16 out of range");
    this.#setU16(this.#length, length);
    this.#length = at;
  }

  #setU16(at: number, value: number): void {
    this.#buffer[at] = value >>> 8;
    this.#buffer[at + 1] = value;
  }

  finish(): Uint8Array {
    // A view when the buffer is mostly used (a large snapshot: no second copy), else a copy.
    if (this.#length >= this.#buffer.length / 2) return this.#buffer.subarray(0, this.#length);
    return this.#buffer.slice(0, this.#length);
  }

  #reserve(bytes: number): void {
    const needed = this.#length + bytes;
    if (needed <= this.#buffer.length) return;
    let capacity = this.#buffer.length * 2;
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
  }
}

// ---- Ordered keys ---------------------------------------------------------------------

/** sortedChunkKeysMax bounds a chunk of SortedKeys; a fuller chunk splits in two. */
const sortedChunkKeysMax = 1024;

/**
 * SortedKeys is an ordered set of strings kept as a list of sorted chunks (the layout of
 * Python's sortedcontainers): insert and remove move at most one chunk's worth of keys, and
 * iteration from any key is a binary search away.
 * Invariant: chunks are non-empty, each sorted, and every key of chunk i is < every key of
 * chunk i + 1.
 */
class SortedKeys {
  #chunks: string[][] = [];

  static fromSorted(keys: string[]): SortedKeys {
    const sorted = new SortedKeys();
    const half = sortedChunkKeysMax / 2;
    for (let i = 0; i < keys.length; i += half) sorted.#chunks.push(keys.slice(i, i + half));
    return sorted;
  }

  insert(key: string): void {
    if (this.#chunks.length === 0) {
      this.#chunks.push([key]);
      return;
    }
    const chunkIndex = Math.min(this.#chunkFor(key), this.#chunks.length - 1);
    const chunk = this.#chunks[chunkIndex];
    assert(chunk !== undefined, "chunk index in range");
    const position = lowerBound(chunk, key);
    assert(chunk[position] !== key, "insert of a key already present");
    chunk.splice(position, 0, key);
    if (chunk.length > sortedChunkKeysMax) {
      this.#chunks.splice(chunkIndex + 1, 0, chunk.splice(chunk.length >> 1));
    }
  }

  remove(key: string): void {
    const chunkIndex = this.#chunkFor(key);
    const chunk = this.#chunks[chunkIndex];
    assert(chunk !== undefined, "remove of a key beyond the last");
    const position = lowerBound(chunk, key);
    assert(chunk[position] === key, "remove of a key not present");
    chunk.splice(position, 1);
    if (chunk.length === 0) this.#chunks.splice(chunkIndex, 1);
  }

  /** from yields keys >= start (> start when not inclusive) in order. */
  *from(start: string, inclusive: boolean): Generator<string> {
    let chunkIndex = this.#chunkFor(start);
    const first = this.#chunks[chunkIndex];
    if (first === undefined) return;
    let position = lowerBound(first, start);
    if (!inclusive && first[position] === start) position++;
    for (; chunkIndex < this.#chunks.length; chunkIndex++, position = 0) {
      const chunk = this.#chunks[chunkIndex];
      assert(chunk !== undefined, "chunk index in range");
      for (; position < chunk.length; position++) yield chunk[position] as string;
    }
  }

  /** #chunkFor is the index of the first chunk whose last key is >= key (may be length). */
  #chunkFor(key: string): number {
    let low = 0;
    let high = this.#chunks.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      const chunk = this.#chunks[middle] as string[];
      if ((chunk[chunk.length - 1] as string) < key) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/** lowerBound is the first position in sorted whose key is >= key. */
function lowerBound(sorted: string[], key: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if ((sorted[middle] as string) < key) low = middle + 1;
    else high = middle;
  }
  return low;
}
