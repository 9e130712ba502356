// Fuzzing of the replicated state machines (src/service/kv.ts, src/service/sessions.ts).
// Command bytes come from clients through the log, and snapshots from the leader: apply
// must never throw (a throw on one replica and not another would split them), must be
// deterministic, and restore must refuse garbage without touching state.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  decodeKvResult,
  encodeCas,
  encodeDelete,
  encodePut,
  KvService,
} from "../../src/service/kv.ts";
import { type Service, standaloneContext } from "../../src/service/service.ts";
import { decodeSessionResult, encodeEnvelope, SessionService } from "../../src/service/sessions.ts";
import { bytes, fuzzParams, fuzzTimeoutMs, mutate, mutations, plainErrorBy, text } from "./fuzz.ts";

// ---- Arbitraries -----------------------------------------------------------------------

/** A small key pool makes commands collide, so puts, deletes and cas interact. */
const key = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom("a", "b", "ab", "a/b", "\u00e9", "😀", "k".repeat(4096)),
  },
  { weight: 1, arbitrary: text(8, 1) },
);
const value = fc.oneof(fc.constantFrom(new Uint8Array(0), Uint8Array.of(1)), bytes(16));
const maybeValue = fc.option(value, { nil: null });

const validKvCommand = fc.oneof(
  fc.tuple(key, value).map(([k, v]) => encodePut(k, v)),
  key.map((k) => encodeDelete(k)),
  fc.tuple(key, maybeValue, maybeValue).map(([k, expected, v]) => encodeCas(k, expected, v)),
);

/** kvCommand is what a log entry may carry: valid commands, broken ones and garbage. */
const kvCommand = fc.oneof(
  { weight: 4, arbitrary: validKvCommand },
  { weight: 2, arbitrary: fc.tuple(validKvCommand, mutations).map(([c, m]) => mutate(c, m)) },
  { weight: 1, arbitrary: bytes(40) },
);

const session = fc.option(
  fc.record({
    clientId: fc.oneof(fc.constantFrom("c1", "c2", "c3", "c4"), text(8, 1)),
    seq: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.maxSafeNat().filter((seq) => seq >= 1)),
  }),
  { nil: undefined },
).filter((s) => s === undefined || (new TextEncoder().encode(s.clientId).length <= 128));

const validEnvelope = fc.tuple(session, kvCommand).map(([s, c]) => encodeEnvelope(s, c));

/** envelopeCommand is a sessions log entry: envelopes, broken ones and garbage. */
const envelopeCommand = fc.oneof(
  { weight: 4, arbitrary: validEnvelope },
  { weight: 2, arbitrary: fc.tuple(validEnvelope, mutations).map(([e, m]) => mutate(e, m)) },
  { weight: 1, arbitrary: bytes(40) },
);

// ---- Helpers ---------------------------------------------------------------------------

/** applyAll applies commands at increasing indexes from `first`, returning the results. */
function applyAll(service: Service, commands: readonly Uint8Array[], first = 1): Uint8Array[] {
  return commands.map((command, i) =>
    service.apply(command, standaloneContext({ index: first + i, term: 1 }))
  );
}

/**
 * restoreRefusal restores data and returns the error, checking the contract: a plain
 * Error with a message, and state exactly as before. One known bug is tolerated (see the
 * failing tests below): invalid UTF-8 in a snapshot's magic bytes escapes as TypeError.
 */
function restoreRefusal(service: Service, data: Uint8Array): Error | undefined {
  const before = service.snapshot();
  let error: Error | undefined;
  try {
    error = plainErrorBy(() => service.restore(data));
  } catch (thrown: unknown) {
    if (!(thrown instanceof TypeError && thrown.message === invalidUtf8Message)) throw thrown;
    error = thrown;
  }
  if (error !== undefined) {
    expect(error.message.length).toBeGreaterThan(0);
    expect(service.snapshot()).toEqual(before);
  }
  return error;
}

const invalidUtf8Message = "The encoded data was not valid for encoding utf-8";

// ---- Properties ------------------------------------------------------------------------

const services = [
  {
    name: "KvService",
    create: (): Service => new KvService(),
    command: kvCommand,
    checkResult: (result: Uint8Array) => decodeKvResult(result),
  },
  {
    name: "SessionService",
    create: (): Service => new SessionService(new KvService()),
    command: envelopeCommand,
    checkResult: (result: Uint8Array) => {
      const decoded = decodeSessionResult(result);
      if (decoded.type !== "rejected") decodeKvResult(decoded.result);
    },
  },
  {
    name: "SessionService with 2 clients at most",
    create: (): Service => new SessionService(new KvService(), { clientsMax: 2 }),
    command: envelopeCommand,
    checkResult: (result: Uint8Array) => {
      decodeSessionResult(result);
    },
  },
];

for (const kind of services) {
  describe(`${kind.name} under fuzzing`, () => {
    test("apply never throws, returns well-formed results and is deterministic", () => {
      fc.assert(
        fc.property(fc.array(kind.command, { maxLength: 30 }), (commands) => {
          const a = kind.create();
          const b = kind.create();
          const resultsA = applyAll(a, commands);
          expect(applyAll(b, commands)).toEqual(resultsA);
          for (const result of resultsA) kind.checkResult(result);
          expect(b.snapshot()).toEqual(a.snapshot());
        }),
        fuzzParams(300),
      );
    }, fuzzTimeoutMs);

    test("a replica restored from a snapshot mid-log ends identical", () => {
      fc.assert(
        fc.property(
          fc.array(kind.command, { maxLength: 20 }),
          fc.array(kind.command, { maxLength: 10 }),
          (before, after) => {
            const leader = kind.create();
            applyAll(leader, before);
            const snapshot = leader.snapshot();
            const follower = kind.create();
            follower.restore(snapshot);
            // The snapshot format is canonical: restoring and saving gives the same bytes.
            expect(follower.snapshot()).toEqual(snapshot);
            const first = before.length + 1;
            expect(applyAll(follower, after, first)).toEqual(applyAll(leader, after, first));
            expect(follower.snapshot()).toEqual(leader.snapshot());
          },
        ),
        fuzzParams(200),
      );
    }, fuzzTimeoutMs);

    test("restore refuses garbage with a plain Error and leaves state unchanged", () => {
      fc.assert(
        fc.property(
          fc.array(kind.command, { maxLength: 10 }),
          fc.oneof(
            bytes(64),
            fc.tuple(fc.array(kind.command, { maxLength: 10 }), mutations).map(
              ([commands, edits]) => {
                const source = kind.create();
                applyAll(source, commands);
                return mutate(source.snapshot(), edits);
              },
            ),
          ),
          (commands, garbage) => {
            const service = kind.create();
            applyAll(service, commands);
            if (restoreRefusal(service, garbage) === undefined) {
              // Accepted: then it was a snapshot, and it reads back as the same bytes.
              expect(service.snapshot()).toEqual(garbage);
            }
          },
        ),
        fuzzParams(400),
      );
    }, fuzzTimeoutMs);
  });
}

function thrownError(f: () => unknown): Error | undefined {
  try {
    f();
  } catch (error: unknown) {
    return error as Error;
  }
  return undefined;
}

describe("service snapshots: invalid UTF-8 (once a bug)", () => {
  // Bugs found by this suite, left for the services' owner: restore decodes the 4 magic
  // bytes with a fatal TextDecoder outside its DecodeError/EnvelopeError handling, so
  // invalid UTF-8 there escapes as TypeError instead of "Invalid kv snapshot ...". State
  // is still unchanged. Remove .failing once restore wraps it.
  test("KvService.restore refuses invalid UTF-8 magic with a plain Error", () => {
    const service = new KvService();
    const error = thrownError(() => service.restore(Uint8Array.of(0xff, 0xff, 0xff, 0xff)));
    expect(error?.constructor).toBe(Error);
    expect(error?.message).toContain("snapshot");
  });

  test("SessionService.restore refuses invalid UTF-8 magic with a plain Error", () => {
    const service = new SessionService(new KvService());
    const error = thrownError(() => service.restore(Uint8Array.of(0xff, 0xff, 0xff, 0xff)));
    expect(error?.constructor).toBe(Error);
    expect(error?.message).toContain("snapshot");
  });
});
