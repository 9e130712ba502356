import { describe, expect, test } from "bun:test";
import type { ApplyContext, Service } from "../../src/service/service.ts";
import {
  decodeEnvelope,
  decodeSessionResult,
  encodeEnvelope,
  type SessionKey,
  SessionService,
  unwrapResult,
} from "../../src/service/sessions.ts";
import { decodeKvResult, encodePut, KvService } from "../../src/service/kv.ts";

const text = new TextEncoder();
const bytes = (value: string) => text.encode(value);

/** Counter counts applies and answers each with the count so far. */
class Counter implements Service {
  applied = 0;
  apply(_command: Uint8Array, _context: ApplyContext): Uint8Array {
    this.applied++;
    return Uint8Array.of(this.applied);
  }
  snapshot(): Uint8Array {
    return Uint8Array.of(this.applied);
  }
  restore(data: Uint8Array): void {
    this.applied = data[0] ?? 0;
  }
}

/** Log applies envelopes at increasing indexes, as a node would. */
class Log {
  index = 0;
  constructor(readonly service: SessionService) {}
  write(session: SessionKey | undefined, command: Uint8Array = Uint8Array.of(0)) {
    this.index++;
    return decodeSessionResult(
      this.service.apply(encodeEnvelope(session, command), { index: this.index, term: 1 }),
    );
  }
}

describe("SessionService exactly-once apply", () => {
  test("a retry with the same seq returns the cached result without applying again", () => {
    const counter = new Counter();
    const log = new Log(new SessionService(counter));
    const first = log.write({ clientId: "c1", seq: 1 });
    const retry = log.write({ clientId: "c1", seq: 1 });
    expect(first).toEqual({ type: "applied", result: Uint8Array.of(1) });
    expect(retry).toEqual({ type: "duplicate", result: Uint8Array.of(1) });
    expect(counter.applied).toBe(1);
  });

  test("a newer seq applies and becomes the cached one", () => {
    const counter = new Counter();
    const log = new Log(new SessionService(counter));
    log.write({ clientId: "c1", seq: 1 });
    expect(log.write({ clientId: "c1", seq: 5 })).toEqual({
      type: "applied",
      result: Uint8Array.of(2),
    });
    expect(log.write({ clientId: "c1", seq: 5 })).toEqual({
      type: "duplicate",
      result: Uint8Array.of(2),
    });
    expect(log.service.lastApplied("c1")).toEqual({ seq: 5, index: 2 });
  });

  test("an older seq is rejected as stale and not applied", () => {
    const counter = new Counter();
    const log = new Log(new SessionService(counter));
    log.write({ clientId: "c1", seq: 3 });
    const stale = log.write({ clientId: "c1", seq: 2 });
    expect(stale.type).toBe("rejected");
    expect(stale).toMatchObject({ code: "stale-sequence" });
    expect(counter.applied).toBe(1);
    expect(log.service.lastApplied("c1")?.seq).toBe(3);
  });

  test("writes without a session always apply; clients are independent", () => {
    const counter = new Counter();
    const log = new Log(new SessionService(counter));
    log.write(undefined);
    log.write(undefined);
    log.write({ clientId: "a", seq: 1 });
    log.write({ clientId: "b", seq: 1 });
    expect(counter.applied).toBe(4);
    expect(log.service.clientCount).toBe(2);
  });

  test("the duplicate of a kv write reports the original index", () => {
    const kv = new KvService();
    const log = new Log(new SessionService(kv));
    log.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1")));
    log.write(undefined, encodePut("other", bytes("x")));
    const retry = log.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1")));
    expect(retry.type).toBe("duplicate");
    if (retry.type !== "duplicate") return;
    expect(decodeKvResult(retry.result)).toEqual({ type: "put", ok: true, index: 1 });
    expect(kv.get("k")).toEqual({ value: bytes("v1"), modIndex: 1 });
  });

  test("a seq reused for a different command is refused, not answered as the first", () => {
    const kv = new KvService();
    const log = new Log(new SessionService(kv));
    log.write({ clientId: "cli1", seq: 5 }, encodePut("idem-a", bytes("v")));
    const before = log.service.snapshot();
    for (const command of [encodePut("idem-b", bytes("v")), encodePut("idem-a", bytes("w"))]) {
      const reused = log.write({ clientId: "cli1", seq: 5 }, command);
      expect(reused).toMatchObject({ type: "rejected", code: "idempotency-key-reused" });
      expect((reused as { message: string }).message).toContain('"cli1"');
      expect((reused as { message: string }).message).toContain("index 1");
    }
    expect(kv.get("idem-b")).toBeUndefined();
    expect(kv.get("idem-a")).toEqual({ value: bytes("v"), modIndex: 1 });
    // Refusals change nothing, so every replica stays equal; the same write is still a retry.
    expect(log.service.snapshot()).toEqual(before);
    expect(log.write({ clientId: "cli1", seq: 5 }, encodePut("idem-a", bytes("v"))).type).toBe(
      "duplicate",
    );
  });

  test("a malformed envelope is rejected deterministically without throwing", () => {
    const counter = new Counter();
    const service = new SessionService(counter);
    for (
      const envelope of [
        new Uint8Array(0),
        Uint8Array.of(9),
        Uint8Array.of(1, 0),
        Uint8Array.of(1, 2, 97),
      ]
    ) {
      const result = decodeSessionResult(service.apply(envelope, { index: 1, term: 1 }));
      expect(result).toMatchObject({ type: "rejected", code: "malformed-envelope" });
    }
    expect(counter.applied).toBe(0);
  });
});

describe("SessionService eviction", () => {
  function run(service: SessionService) {
    const log = new Log(service);
    log.write({ clientId: "a", seq: 1 }); // index 1
    log.write({ clientId: "b", seq: 1 }); // index 2
    log.write({ clientId: "c", seq: 1 }); // index 3
    log.write({ clientId: "a", seq: 2 }); // index 4: a is now the newest
    log.write({ clientId: "d", seq: 1 }); // index 5: the table is full, b is the oldest
    return log;
  }

  test("a full table evicts the client with the oldest last-applied index", () => {
    const service = new SessionService(new Counter(), { clientsMax: 3 });
    const log = run(service);
    expect(service.clientCount).toBe(3);
    expect(service.lastApplied("b")).toBeUndefined();
    expect(service.lastApplied("a")).toEqual({ seq: 2, index: 4 });
    // The evicted client's retry is applied again: the documented limit of a bounded table.
    expect(log.write({ clientId: "b", seq: 1 }).type).toBe("applied");
    expect(service.lastApplied("c")).toBeUndefined();
  });

  test("every replica evicts the same client and reaches the same snapshot", () => {
    const one = new SessionService(new Counter(), { clientsMax: 3 });
    const two = new SessionService(new Counter(), { clientsMax: 3 });
    run(one);
    run(two);
    expect(one.snapshot()).toEqual(two.snapshot());
  });

  test("eviction order survives a snapshot", () => {
    const original = new SessionService(new Counter(), { clientsMax: 3 });
    const log = run(original);
    const restored = new SessionService(new Counter(), { clientsMax: 3 });
    restored.restore(original.snapshot());
    const restoredLog = new Log(restored);
    restoredLog.index = log.index;
    log.write({ clientId: "e", seq: 1 });
    restoredLog.write({ clientId: "e", seq: 1 });
    expect(restored.lastApplied("c")).toBeUndefined();
    expect(restored.snapshot()).toEqual(original.snapshot());
  });

  test("restoring a larger table into a smaller bound evicts the oldest", () => {
    const big = new SessionService(new Counter(), { clientsMax: 10 });
    run(big);
    const small = new SessionService(new Counter(), { clientsMax: 2 });
    small.restore(big.snapshot());
    expect(small.clientCount).toBe(2);
    expect(small.lastApplied("a")).toBeDefined();
    expect(small.lastApplied("d")).toBeDefined();
  });
});

describe("SessionService snapshots", () => {
  test("a restored replica still deduplicates retries", () => {
    const kv = new KvService();
    const leader = new Log(new SessionService(kv));
    leader.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1")));

    const followerKv = new KvService();
    const follower = new Log(new SessionService(followerKv));
    follower.service.restore(leader.service.snapshot());
    follower.index = leader.index;
    const retry = follower.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1")));
    expect(retry.type).toBe("duplicate");
    expect(followerKv.get("k")).toEqual({ value: bytes("v1"), modIndex: 1 });
    expect(follower.service.snapshot()).toEqual(leader.service.snapshot());
  });

  test("a restored replica refuses a reused seq too: the command's digest is in the snapshot", () => {
    const leader = new Log(new SessionService(new KvService()));
    leader.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1")));
    const follower = new Log(new SessionService(new KvService()));
    follower.service.restore(leader.service.snapshot());
    follower.index = leader.index;
    expect(follower.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v2")))).toMatchObject({
      type: "rejected",
      code: "idempotency-key-reused",
    });
    expect(follower.write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v1"))).type).toBe(
      "duplicate",
    );
  });

  test("a snapshot of the format before digests (SES1) still restores, its retries unchecked", () => {
    const kv = new KvService();
    kv.apply(encodePut("k", bytes("v1")), { index: 7, term: 1 });
    const id = bytes("old");
    const result = Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0, 7); // kv put result, index 7
    const ses1 = Uint8Array.of(
      ...bytes("SES1"),
      0,
      0,
      0,
      1, // one client
      id.length,
      ...id,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      3, // seq 3
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      7, // index 7
      0,
      0,
      0,
      result.length,
      ...result,
      ...kv.snapshot(),
    );
    const service = new SessionService(new KvService());
    service.restore(ses1);
    expect(service.lastApplied("old")).toEqual({ seq: 3, index: 7 });
    const log = new Log(service);
    log.index = 7;
    // No digest was kept for it: any command with seq 3 is taken as the retry, as before.
    const retry = log.write({ clientId: "old", seq: 3 }, encodePut("k", bytes("v2")));
    expect(retry).toEqual({ type: "duplicate", result });
    // Its snapshot is of the new format, and a new write of that client is checked again.
    log.write({ clientId: "old", seq: 4 }, encodePut("k", bytes("v4")));
    expect(log.write({ clientId: "old", seq: 4 }, encodePut("k", bytes("v5"))).type).toBe(
      "rejected",
    );
    expect(new TextDecoder().decode(service.snapshot().subarray(0, 4))).toBe("SES2");
  });

  test("a malformed snapshot throws and changes nothing", () => {
    const counter = new Counter();
    const service = new SessionService(counter);
    new Log(service).write({ clientId: "c", seq: 1 });
    const before = service.snapshot();
    const other = new SessionService(new Counter());
    new Log(other).write({ clientId: "x", seq: 1 });
    new Log(other).write({ clientId: "y", seq: 1 });
    const good = other.snapshot();
    for (const bad of [good.subarray(0, 10), Uint8Array.of(0x58, ...good.subarray(1))]) {
      expect(() => service.restore(bad)).toThrow("Invalid sessions snapshot");
      expect(service.snapshot()).toEqual(before);
    }
  });

  test("an inner restore failure leaves the sessions table as it was", () => {
    const kv = new KvService();
    const service = new SessionService(kv);
    new Log(service).write({ clientId: "c", seq: 1 }, encodePut("k", bytes("v")));
    const before = service.snapshot();
    const other = new SessionService(new KvService());
    new Log(other).write({ clientId: "z", seq: 1 }, encodePut("k", bytes("v")));
    const broken = other.snapshot().subarray(0, -1); // truncates the kv part only
    expect(() => service.restore(broken)).toThrow("Invalid kv snapshot");
    expect(service.snapshot()).toEqual(before);
  });
});

describe("envelopes", () => {
  test("unwrapResult answers the client's outcome of each kind of result", () => {
    const log = new Log(new SessionService(new Counter()));
    const apply = (session: SessionKey | undefined, command = Uint8Array.of(0)) => {
      log.index++;
      return log.service.apply(encodeEnvelope(session, command), { index: log.index, term: 1 });
    };
    expect(unwrapResult(apply({ clientId: "c", seq: 2 }), 1)).toEqual({
      ok: true,
      result: Uint8Array.of(1),
      index: 1,
    });
    // The duplicate's index is the one its entry was logged at; its result the first one's.
    expect(unwrapResult(apply({ clientId: "c", seq: 2 }), 2)).toEqual({
      ok: true,
      result: Uint8Array.of(1),
      index: 2,
    });
    expect(unwrapResult(apply({ clientId: "c", seq: 1 }), 3)).toEqual({
      ok: false,
      code: "rejected",
      reason: "stale-sequence",
      message: expect.stringContaining("older than its last applied sequence 2"),
    });
    expect(unwrapResult(apply({ clientId: "c", seq: 2 }, Uint8Array.of(9)), 4)).toMatchObject({
      ok: false,
      code: "rejected",
      reason: "idempotency-key-reused",
    });
  });

  test("encodeEnvelope and decodeEnvelope round-trip", () => {
    const command = Uint8Array.of(1, 2, 3);
    expect(decodeEnvelope(encodeEnvelope(undefined, command))).toEqual({
      session: undefined,
      command,
    });
    const session = { clientId: "client-1.a_b", seq: Number.MAX_SAFE_INTEGER };
    expect(decodeEnvelope(encodeEnvelope(session, command))).toEqual({ session, command });
  });

  test("encodeEnvelope refuses session keys the table cannot hold", () => {
    const command = new Uint8Array(0);
    expect(() => encodeEnvelope({ clientId: "", seq: 1 }, command)).toThrow(RangeError);
    expect(() => encodeEnvelope({ clientId: "c".repeat(129), seq: 1 }, command)).toThrow(
      "exceeds the maximum",
    );
    expect(() => encodeEnvelope({ clientId: "c", seq: 0 }, command)).toThrow("positive");
    expect(() => encodeEnvelope({ clientId: "c", seq: 1.5 }, command)).toThrow("positive");
  });

  test("decodeSessionResult rejects malformed bytes", () => {
    expect(() => decodeSessionResult(new Uint8Array(0))).toThrow("Invalid session result");
    expect(() => decodeSessionResult(Uint8Array.of(2, 99))).toThrow("unknown error code");
  });
});
