// Framing of the peer byte stream: each frame is [u32 big-endian payload length][payload].
// Pure: no I/O. The decoder checks a length against the maximum as soon as the 4 length
// bytes are in, so an oversized or garbage prefix is refused before anything is buffered.

import { assert } from "../lib/assert.ts";
import { frameBytesMax as defaultFrameBytesMax } from "./limits.ts";

/** frameHeaderBytes is the size of the length prefix. */
export const frameHeaderBytes = 4;

const u32Max = 0xffff_ffff;

/** encodeFrame returns payload with its length prefix, in a new array. */
export function encodeFrame(
  payload: Uint8Array,
  frameBytesMax: number = defaultFrameBytesMax,
): Uint8Array {
  checkFrameBytes(payload.byteLength, frameBytesMax);
  const frame = new Uint8Array(frameHeaderBytes + payload.byteLength);
  writeFrameHeader(frame, 0, payload.byteLength);
  frame.set(payload, frameHeaderBytes);
  return frame;
}

/** writeFrameHeader writes a payload length prefix into target at offset. */
export function writeFrameHeader(target: Uint8Array, offset: number, payloadBytes: number): void {
  assert(
    Number.isInteger(payloadBytes) && payloadBytes >= 0 && payloadBytes <= u32Max,
    `frame payload length must fit a u32: ${payloadBytes}`,
  );
  target[offset] = payloadBytes >>> 24;
  target[offset + 1] = (payloadBytes >>> 16) & 0xff;
  target[offset + 2] = (payloadBytes >>> 8) & 0xff;
  target[offset + 3] = payloadBytes & 0xff;
}

/** checkFrameBytes throws the decoder's RangeError for a payload beyond the maximum. */
export function checkFrameBytes(payloadBytes: number, frameBytesMax: number): void {
  if (payloadBytes > frameBytesMax) throw frameTooLarge(payloadBytes, frameBytesMax);
}

function frameTooLarge(payloadBytes: number, frameBytesMax: number): RangeError {
  return new RangeError(
    `Frame of ${payloadBytes} bytes exceeds the maximum of ${frameBytesMax} bytes`,
  );
}

/**
 * FrameDecoder turns a byte stream, cut into chunks anywhere, back into frame payloads.
 *
 * Every byte is copied at most once: a frame that lies whole inside a chunk is sliced out
 * of it; a frame split across chunks is assembled in an array allocated at its exact size
 * once its length is known. Each returned payload owns its memory (nothing else is ever
 * written into it, and it keeps no larger buffer alive), so views into it, such as the
 * codec's entry data, stay valid.
 *
 * After push throws, the stream is unusable (its frame boundaries are lost): every later
 * push throws the same error. Close the connection.
 */
export class FrameDecoder {
  #frameBytesMax: number;
  /** The length prefix of the current partial frame; #headerFill of its bytes are in. */
  readonly #header = new Uint8Array(frameHeaderBytes);
  #headerFill = 0;
  /** The payload of the current partial frame once its length is known. */
  #payload: Uint8Array | null = null;
  #payloadFill = 0;
  #failure: RangeError | null = null;

  constructor(frameBytesMax: number = defaultFrameBytesMax) {
    assert(
      Number.isInteger(frameBytesMax) && frameBytesMax >= 0 && frameBytesMax <= u32Max,
      `frameBytesMax must be a u32: ${frameBytesMax}`,
    );
    this.#frameBytesMax = frameBytesMax;
  }

  /**
   * setFrameBytesMax changes the bound for frames not yet started: a connection starts
   * with a small one until its handshake is done, so an unauthenticated peer cannot make
   * us allocate a large frame for a 4-byte header.
   */
  setFrameBytesMax(frameBytesMax: number): void {
    assert(
      Number.isInteger(frameBytesMax) && frameBytesMax >= 0 && frameBytesMax <= u32Max,
      "frameBytesMax must be a u32",
    );
    this.#frameBytesMax = frameBytesMax;
  }

  /** bufferedBytes counts the bytes held for a frame that is not complete yet. */
  get bufferedBytes(): number {
    return this.#headerFill + this.#payloadFill;
  }

  /**
   * push consumes a chunk and returns the payloads it completes, in order. Throws
   * RangeError when a length prefix exceeds the maximum.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#failure !== null) throw this.#failure;
    const payloads: Uint8Array[] = [];
    const chunkBytes = chunk.byteLength;
    let offset = 0;
    while (offset < chunkBytes) {
      if (this.#headerFill === 0 && this.#payload === null) {
        // Fast path: whole frames straight out of the chunk.
        if (chunkBytes - offset >= frameHeaderBytes) {
          const length = readU32(chunk, offset);
          this.#check(length);
          const start = offset + frameHeaderBytes;
          if (chunkBytes - start >= length) {
            payloads.push(chunk.slice(start, start + length));
            offset = start + length;
            continue;
          }
        }
      }
      if (this.#payload === null) {
        // Assemble the length prefix.
        while (this.#headerFill < frameHeaderBytes && offset < chunkBytes) {
          this.#header[this.#headerFill++] = chunk[offset++]!;
        }
        if (this.#headerFill < frameHeaderBytes) break;
        const length = readU32(this.#header, 0);
        this.#check(length);
        this.#payload = new Uint8Array(length);
        this.#payloadFill = 0;
      }
      const payload = this.#payload;
      const take = Math.min(payload.byteLength - this.#payloadFill, chunkBytes - offset);
      payload.set(chunk.subarray(offset, offset + take), this.#payloadFill);
      this.#payloadFill += take;
      offset += take;
      if (this.#payloadFill === payload.byteLength) {
        payloads.push(payload);
        this.#payload = null;
        this.#payloadFill = 0;
        this.#headerFill = 0;
      }
    }
    return payloads;
  }

  #check(length: number): void {
    if (length > this.#frameBytesMax) {
      this.#failure = frameTooLarge(length, this.#frameBytesMax);
      throw this.#failure;
    }
  }
}

function readU32(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! * 0x100_0000 +
    ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)
  );
}
