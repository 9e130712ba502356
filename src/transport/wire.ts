// The writer and reader under every peer codec (message_codec.ts, handshake_codec.ts,
// auth_input.ts, codec.ts). Pure: no I/O. Field encodings:
//   varint  unsigned LEB128 of a safe integer: at most 8 bytes, no overlong forms, so
//           every value has exactly one encoding; small terms and indexes take 1-3 bytes
//   bool    one byte, 0 or 1
//   name    u8 byte length (1..255), then UTF-8
//   reason  u16 big-endian byte length (0..reasonBytesMax), then UTF-8
//   bytes   varint byte length, then the raw bytes
//   short   u8 byte length (0..nonceBytesMax), then the raw bytes (nonces, auth)
// Encoding a bad value is a local bug (AssertionError); reading bad input throws
// DecodeError.

import { AssertionError } from "../lib/assert.ts";
import { checkFrameBytes, frameHeaderBytes, writeFrameHeader } from "./frame.ts";
import { frameBytesMax, nameBytesMax, nonceBytesMax, reasonBytesMax } from "./limits.ts";

/** DecodeError reports malformed input from the network; it never means a local bug. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

/** Upper bound of a varint: 8 bytes of 7 bits hold any safe integer (53 bits). */
export const varintBytesMax = 8;

// Hot paths: messages for errors are built only when failing, never per field.

const textEncoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of a name, not a byte-order mark to strip.
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function nameBytesUpperBound(name: string): number {
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
export class Writer {
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
export class Reader {
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
