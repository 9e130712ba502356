import { describe, expect, test } from "bun:test";
import { concatBytes } from "../../src/lib/bytes.ts";
import { encodeFrame, FrameDecoder, frameHeaderBytes } from "../../src/transport/frame.ts";
import { frameBytesMax } from "../../src/transport/limits.ts";

function payload(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

function header(length: number): Uint8Array {
  const bytes = new Uint8Array(frameHeaderBytes);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

const payloads = [payload(5, 1), new Uint8Array(0), payload(1, 2), payload(300, 3), payload(2, 4)];
const stream = concatBytes(payloads.map((p) => encodeFrame(p)));

describe("FrameDecoder", () => {
  test("decodes a stream split at every offset", () => {
    for (let split = 0; split <= stream.byteLength; split++) {
      const decoder = new FrameDecoder();
      const out = [
        ...decoder.push(stream.subarray(0, split)),
        ...decoder.push(stream.subarray(split)),
      ];
      expect(out).toEqual(payloads);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  test("decodes a stream split at every pair of offsets", () => {
    const small = concatBytes(
      [payload(3, 9), new Uint8Array(0), payload(7, 8)].map((p) => encodeFrame(p)),
    );
    const expected = [payload(3, 9), new Uint8Array(0), payload(7, 8)];
    for (let first = 0; first <= small.byteLength; first++) {
      for (let second = first; second <= small.byteLength; second++) {
        const decoder = new FrameDecoder();
        const out = [
          ...decoder.push(small.subarray(0, first)),
          ...decoder.push(small.subarray(first, second)),
          ...decoder.push(small.subarray(second)),
        ];
        expect(out).toEqual(expected);
      }
    }
  });

  test("decodes a stream fed one byte at a time", () => {
    const decoder = new FrameDecoder();
    const out: Uint8Array[] = [];
    for (let i = 0; i < stream.byteLength; i++) {
      out.push(...decoder.push(stream.subarray(i, i + 1)));
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(frameHeaderBytes + 300);
    }
    expect(out).toEqual(payloads);
  });

  test("payloads are copies: reusing the chunk afterwards does not change them", () => {
    const decoder = new FrameDecoder();
    const chunk = stream.slice();
    const out = decoder.push(chunk.subarray(0, 20));
    out.push(...decoder.push(chunk.subarray(20)));
    chunk.fill(0xee);
    expect(out).toEqual(payloads);
  });

  test("a payload of exactly the maximum is accepted", () => {
    const decoder = new FrameDecoder(16);
    expect(decoder.push(encodeFrame(payload(16, 5), 16))).toEqual([payload(16, 5)]);
  });

  test("an oversized length is refused from the prefix alone, before any payload arrives", () => {
    expect(() => new FrameDecoder().push(header(frameBytesMax + 1))).toThrow(RangeError);
    const decoder = new FrameDecoder();
    // Only the 4 prefix bytes are pushed: the decoder must not wait for (or allocate) 8 MiB.
    expect(() => decoder.push(header(frameBytesMax + 1))).toThrow(
      new RangeError(
        `Frame of ${frameBytesMax + 1} bytes exceeds the maximum of ${frameBytesMax} bytes`,
      ),
    );
    expect(decoder.bufferedBytes).toBe(0);
    // The stream is unusable afterwards.
    expect(() => decoder.push(payload(3, 0))).toThrow(RangeError);
  });

  test("a 4 GiB length prefix split across chunks is refused once complete", () => {
    const decoder = new FrameDecoder();
    const prefix = header(0xffff_ffff);
    expect(decoder.push(prefix.subarray(0, 2))).toEqual([]);
    expect(() => decoder.push(prefix.subarray(2))).toThrow(
      `Frame of 4294967295 bytes exceeds the maximum of ${frameBytesMax} bytes`,
    );
  });

  test("a frame after valid ones in the same chunk is still checked", () => {
    const decoder = new FrameDecoder(8);
    const chunk = concatBytes([encodeFrame(payload(8, 1), 8), header(9), payload(9, 1)]);
    expect(() => decoder.push(chunk)).toThrow("Frame of 9 bytes exceeds the maximum of 8 bytes");
  });

  test("encodeFrame refuses a payload beyond the maximum", () => {
    expect(() => encodeFrame(payload(17, 0), 16)).toThrow(
      new RangeError("Frame of 17 bytes exceeds the maximum of 16 bytes"),
    );
  });
});
