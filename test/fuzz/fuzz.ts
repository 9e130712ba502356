// Shared settings and arbitraries of the fuzz suite (test/fuzz/*.test.ts).
//
// A plain `bun test test/fuzz` is bounded and reproducible: every property runs a fixed
// number of cases from a fixed seed. For a longer hunt, override both:
//
//   FUZZ_SEED=$RANDOM FUZZ_RUNS=100000 bun test test/fuzz
//
// On failure fast-check reports the seed, the path of the shrunk case and the
// counterexample; rerun with that FUZZ_SEED (and the same FUZZ_RUNS) to reproduce it.

import fc from "fast-check";

/** fuzzSeedDefault fixes the cases of a plain run ("keel" in ASCII). */
const fuzzSeedDefault = 0x6b65656c;

function envInteger(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`${name} must be an integer, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** fuzzSeed is FUZZ_SEED, or the fixed default. */
export const fuzzSeed: number = envInteger("FUZZ_SEED") ?? fuzzSeedDefault;
const fuzzRunsOverride = envInteger("FUZZ_RUNS");

/**
 * fuzzParams are the fast-check parameters of one property: the suite's seed and
 * `numRuns` cases, or FUZZ_RUNS when set. Defaults keep all of test/fuzz within about
 * 20 s on a 2-core machine.
 */
export function fuzzParams<T>(numRuns: number): fc.Parameters<T> {
  // includeErrorInReport: bun prints the message, not the cause, of a failed assertion.
  return { seed: fuzzSeed, numRuns: fuzzRunsOverride ?? numRuns, includeErrorInReport: true };
}

/** fuzzTimeoutMs is the bun:test timeout of one property: generous, unbounded on demand. */
export const fuzzTimeoutMs = fuzzRunsOverride === undefined ? 60_000 : 24 * 60 * 60 * 1000;

// ---- Errors --------------------------------------------------------------------------

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * thrownBy runs f and returns what it threw (undefined if nothing). Anything thrown that is
 * not an instance of one of `allowed` is rethrown, so fast-check reports it as the failure
 * together with its input.
 */
export function thrownBy(f: () => unknown, ...allowed: ErrorClass[]): Error | undefined {
  try {
    f();
    return undefined;
  } catch (error: unknown) {
    if (allowed.some((kind) => error instanceof kind)) return error as Error;
    throw error;
  }
}

/**
 * plainErrorBy is thrownBy for decoders documented to throw `Error` itself: a TypeError or
 * RangeError escaping from inside them (a null dereference, a DataView overrun) is a bug.
 */
export function plainErrorBy(f: () => unknown): Error | undefined {
  const error = thrownBy(f, Error);
  if (error !== undefined && error.constructor !== Error) throw error;
  return error;
}

// ---- Bytes ---------------------------------------------------------------------------

/** bytes is arbitrary input up to maxLength bytes. */
export function bytes(maxLength = 256): fc.Arbitrary<Uint8Array> {
  return fc.uint8Array({ maxLength });
}

/** Mutation is one edit of a byte string; positions wrap around its length. */
type Mutation =
  | { kind: "set"; at: number; value: number }
  | { kind: "flip"; at: number; bit: number }
  | { kind: "insert"; at: number; value: number }
  | { kind: "delete"; at: number }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate"; at: number; length: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("set" as const),
    at: fc.nat(),
    value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0xc0, 0xef),
  }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("duplicate" as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 16 }),
  }),
);

/** mutations is a short list of edits for mutate(). */
export const mutations: fc.Arbitrary<Mutation[]> = fc.array(mutation, {
  minLength: 1,
  maxLength: 4,
});

/** mutate applies edits to a copy of input: the classic way to find decoder bugs near valid input. */
export function mutate(input: Uint8Array, edits: readonly Mutation[]): Uint8Array {
  let out = Array.from(input);
  for (const edit of edits) {
    const at = out.length === 0 ? 0 : edit.at % out.length;
    switch (edit.kind) {
      case "set":
        if (out.length > 0) out[at] = edit.value;
        break;
      case "flip":
        if (out.length > 0) out[at] = out[at]! ^ (1 << edit.bit);
        break;
      case "insert":
        out.splice(at, 0, edit.value);
        break;
      case "delete":
        out.splice(at, 1);
        break;
      case "truncate":
        out = out.slice(0, at);
        break;
      case "duplicate":
        out.splice(at, 0, ...out.slice(at, at + edit.length));
        break;
    }
  }
  return Uint8Array.from(out);
}

export { concatBytes } from "../../src/lib/bytes.ts";

/** splitAt cuts bytes at the given points (taken modulo its length + 1, in order). */
export function splitAt(input: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = cuts.map((cut) => cut % (input.byteLength + 1)).sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const point of [...points, input.byteLength]) {
    chunks.push(input.subarray(start, point));
    start = point;
  }
  return chunks;
}

// ---- Text ----------------------------------------------------------------------------

// Strings are drawn as byte arrays mapped to characters, several times faster than
// fast-check's string arbitraries, which matters at thousands of cases per property.
const specialChars = ["\0", "\n", "\t", "\u007f", "\u00e9", "\ufeff", "\ufffd", "😀", "\u2028"];
const asciiCount = 0x7f - 0x20;
const codePointCount = 0x110000 - 0x800;

/**
 * awkwardChar maps a byte to a character: mostly printable ASCII, then the characters
 * decoders get wrong (NUL, controls, a byte-order mark, U+FFFD, astral), then any code
 * point (salt picks which; never half a surrogate pair).
 */
function awkwardChar(byte: number, salt: number): string {
  if (byte < asciiCount) return String.fromCharCode(0x20 + byte);
  const special = specialChars[byte - asciiCount];
  if (special !== undefined) return special;
  const code = (Math.imul(byte, 0x9e3779b1) ^ salt) >>> 0;
  const point = code % codePointCount;
  return String.fromCodePoint(point < 0xd800 ? point : point + 0x800);
}

/** text is a well-formed string (no lone surrogates) of minLength to maxLength characters. */
export function text(maxLength = 24, minLength = 0): fc.Arbitrary<string> {
  return fc.tuple(fc.uint8Array({ minLength, maxLength }), fc.nat()).map(([codes, salt]) => {
    let out = "";
    for (const code of codes) out += awkwardChar(code, salt);
    return out;
  });
}

// ---- Allocations ---------------------------------------------------------------------

/**
 * largestAllocationDuring runs f and returns the largest size passed to `new Uint8Array(n)`
 * or `new ArrayBuffer(n)` meanwhile, by wrapping the global constructors (the code under
 * test looks them up at call time). Views and slices of existing buffers are not counted:
 * they are bounded by the input. f must not throw; wrap it in thrownBy.
 */
export function largestAllocationDuring(f: () => void): number {
  const original = { Uint8Array: globalThis.Uint8Array, ArrayBuffer: globalThis.ArrayBuffer };
  let largestBytes = 0;
  const record = (args: unknown[]): void => {
    if (typeof args[0] === "number") largestBytes = Math.max(largestBytes, args[0]);
  };
  const uint8ArraySpy: Uint8ArrayConstructor = new Proxy(original.Uint8Array, {
    construct(target, args, newTarget): object {
      record(args);
      return Reflect.construct(target, args, newTarget === uint8ArraySpy ? target : newTarget);
    },
  });
  const arrayBufferSpy: ArrayBufferConstructor = new Proxy(original.ArrayBuffer, {
    construct(target, args, newTarget): object {
      record(args);
      return Reflect.construct(target, args, newTarget === arrayBufferSpy ? target : newTarget);
    },
  });
  globalThis.Uint8Array = uint8ArraySpy;
  globalThis.ArrayBuffer = arrayBufferSpy;
  try {
    f();
  } finally {
    globalThis.Uint8Array = original.Uint8Array;
    globalThis.ArrayBuffer = original.ArrayBuffer;
  }
  return largestBytes;
}
