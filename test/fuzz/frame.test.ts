// Fuzzing of the peer stream framing (src/transport/frame.ts): the first code to see
// bytes from a peer, before any handshake.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { encodeFrame, FrameDecoder, frameHeaderBytes } from "../../src/transport/frame.ts";
import { frameBytesMax } from "../../src/transport/limits.ts";
import {
  bytes,
  concatBytes,
  fuzzParams,
  fuzzTimeoutMs,
  largestAllocationDuring,
  splitAt,
  thrownBy,
} from "./fuzz.ts";

function header(payloadBytes: number): Uint8Array {
  const out = new Uint8Array(frameHeaderBytes);
  new DataView(out.buffer).setUint32(0, payloadBytes);
  return out;
}

/** cuts are where a stream is split into chunks, as TCP may deliver it. */
const cuts = fc.array(fc.nat(), { maxLength: 12 });

describe("FrameDecoder under fuzzing", () => {
  test("valid frames cut into arbitrary chunks come back whole and in order", () => {
    fc.assert(
      fc.property(
        fc.array(bytes(300), { maxLength: 8 }),
        cuts,
        fc.boolean(),
        (payloads, cutPoints, oneByteAtATime) => {
          const stream = concatBytes(payloads.map((payload) => encodeFrame(payload)));
          const chunks = oneByteAtATime
            ? Array.from(stream, (byte) => Uint8Array.of(byte))
            : splitAt(stream, cutPoints);
          const decoder = new FrameDecoder();
          const out: Uint8Array[] = [];
          for (const chunk of chunks) {
            out.push(...decoder.push(chunk));
            expect(decoder.bufferedBytes).toBeLessThanOrEqual(frameHeaderBytes + 300);
          }
          expect(out).toEqual(payloads);
          expect(decoder.bufferedBytes).toBe(0);
        },
      ),
      fuzzParams(400),
    );
  }, fuzzTimeoutMs);

  test(
    "arbitrary bytes only ever raise RangeError, never buffer past the maximum, and stay failed",
    () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 64 }),
          fc.array(bytes(48), { maxLength: 10 }),
          (max, chunks) => {
            const decoder = new FrameDecoder(max);
            let failure: Error | undefined;
            for (const chunk of chunks) {
              if (failure !== undefined) {
                // After a failure every push repeats it: the frame boundaries are lost.
                expect(thrownBy(() => decoder.push(chunk), RangeError)).toBe(failure);
                continue;
              }
              failure = thrownBy(() => {
                for (const payload of decoder.push(chunk)) {
                  expect(payload.byteLength).toBeLessThanOrEqual(max);
                }
              }, RangeError);
              expect(decoder.bufferedBytes).toBeLessThanOrEqual(frameHeaderBytes + max);
            }
            if (failure !== undefined) {
              expect(failure.message).toMatch(
                /^Frame of \d+ bytes exceeds the maximum of \d+ bytes$/,
              );
            }
          },
        ),
        fuzzParams(1000),
      );
    },
    fuzzTimeoutMs,
  );

  test("a header declaring more than the maximum is refused before anything is allocated", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.constant(0xffff_ffff),
          fc.constant(frameBytesMax + 1),
          fc.integer({ min: frameBytesMax + 1, max: 0xffff_ffff }),
        ),
        fc.nat(frameHeaderBytes),
        (declared, split) => {
          const stream = concatBytes([header(declared), new Uint8Array(16)]);
          const decoder = new FrameDecoder();
          let failure: Error | undefined;
          const largestBytes = largestAllocationDuring(() => {
            failure = thrownBy(() => {
              decoder.push(stream.subarray(0, split));
              decoder.push(stream.subarray(split));
            }, RangeError);
          });
          expect(failure?.message).toBe(
            `Frame of ${declared} bytes exceeds the maximum of ${frameBytesMax} bytes`,
          );
          expect(largestBytes).toBeLessThan(1024);
          expect(decoder.bufferedBytes).toBeLessThanOrEqual(frameHeaderBytes);
        },
      ),
      fuzzParams(200),
    );
  }, fuzzTimeoutMs);

  test("whatever the bytes, no allocation exceeds the maximum frame", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1 << 20 }),
        fc.array(fc.oneof(bytes(16), fc.nat().map(header)), { maxLength: 8 }),
        cuts,
        (max, parts, cutPoints) => {
          const decoder = new FrameDecoder(max);
          const largestBytes = largestAllocationDuring(() => {
            thrownBy(() => {
              for (const chunk of splitAt(concatBytes(parts), cutPoints)) decoder.push(chunk);
            }, RangeError);
          });
          expect(largestBytes).toBeLessThanOrEqual(Math.max(max, 256));
        },
      ),
      fuzzParams(300),
    );
  }, fuzzTimeoutMs);

  test("the allocation probe sees the exact-size buffer of a split frame", () => {
    // Guards largestAllocationDuring itself: a split frame is assembled in a buffer of its
    // declared size, allocated once the 4 length bytes are in.
    const decoder = new FrameDecoder();
    const largestBytes = largestAllocationDuring(() => {
      decoder.push(header(5000));
    });
    expect(largestBytes).toBe(5000);
  });
});
