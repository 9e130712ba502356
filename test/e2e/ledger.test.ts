// End-to-end: Jepsen's bank test on the ledger example (examples/ledger), in its own
// binary built with keel as a library (make example-ledger -> dist/keel-ledger).
// Concurrent transfers and holds go through every member while the leader is killed
// (kill -9) and a member is wiped and comes back as a replacement. Afterwards every member
// reports the same balances from its own state, the total is unchanged, no balance is
// negative, and every hold that expired did so once, at the same log position everywhere.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { Prng } from "../../src/lib/prng.ts";
import { type StatusBody, TestCluster } from "../support/cluster.ts";

const ledgerBinary = resolve(import.meta.dir, "..", "..", "dist", "keel-ledger");
const accounts = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"];
const opening = 1000;
const supply = accounts.length * opening;

let cluster: TestCluster;

beforeAll(() => {
  cluster = new TestCluster({
    ipBase: 171,
    binary: ledgerBinary,
    name: "ledger",
    // Small, so that snapshots (with the timer table in them) are taken during the run.
    snapshotEntries: 300,
  });
  cluster.startAll();
});

afterAll(async () => {
  await cluster?.stop();
});

type Json = Record<string, unknown>;

async function post(name: string, path: string, body: unknown, key?: string): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== undefined) headers["idempotency-key"] = key;
  return await fetch(`${cluster.member(name).url}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    headers,
    signal: AbortSignal.timeout(5000),
  });
}

/**
 * submit sends a command through `names` in turn with one idempotency key until a member
 * answers 200, and returns the result; undefined when the outcome stayed unknown.
 */
async function submit(
  names: () => string[],
  body: Json,
  key: string,
  timeoutMs = 10_000,
): Promise<Json | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    const live = names();
    const name = live[attempt % live.length];
    if (name !== undefined) {
      try {
        const response = await post(name, "/v1/command", body, key);
        if (response.ok) return await response.json() as Json;
        await response.body?.cancel();
      } catch {
        // Unreachable or timed out: the same key again, perhaps elsewhere.
      }
    }
    await Bun.sleep(25 + attempt * 5);
  }
  return undefined;
}

async function query(name: string, body: Json): Promise<Json> {
  const response = await post(name, "/v1/query?consistency=stale", body);
  expect(response.status).toBe(200);
  return await response.json() as Json;
}

async function status(name: string): Promise<(StatusBody & Json) | undefined> {
  return await cluster.status(name) as (StatusBody & Json) | undefined;
}

test(
  "the bank test: transfers across a leader kill and a replacement keep every invariant",
  async () => {
    await cluster.waitForLeader();
    const names = cluster.members.map((m) => m.name);
    const running = () => cluster.members.filter((m) => m.process !== undefined).map((m) => m.name);
    const genesis = await submit(
      running,
      { type: "genesis", balances: Object.fromEntries(accounts.map((a) => [a, opening])) },
      "setup:1",
    );
    expect(genesis).toMatchObject({ ok: true, supply });

    // Workers: transfers and holds through every member, each with its own client id.
    let stopping = false;
    const outcomes = { ok: 0, refused: 0, unknown: 0, holds: 0 };
    const worker = async (id: number): Promise<void> => {
      const random = new Prng(id + 1);
      for (let seq = 1; !stopping; seq++) {
        const from = random.pick(accounts);
        const to = random.pick(accounts.filter((a) => a !== from));
        const amount = random.int(1, 60);
        const body: Json = random.chance(0.2)
          ? { type: "hold", from, to, amount, ttlMs: random.int(200, 2500) }
          : { type: "transfer", from, to, amount };
        const result = await submit(running, body, `worker-${id}:${seq}`, 8000);
        if (result === undefined) outcomes.unknown++;
        else if (result.ok === true) {
          outcomes.ok++;
          if (body.type === "hold") outcomes.holds++;
        } else outcomes.refused++;
      }
    };
    const workers = Array.from({ length: 8 }, (_, i) => worker(i));

    // Midway, kill -9 the leader; bring it back with its data once another member leads.
    await Bun.sleep(2500);
    const first = await cluster.waitForLeader();
    await cluster.kill(first);
    const second = await cluster.waitForLeader([first], 20_000);
    expect(second).not.toBe(first);
    await Bun.sleep(1500);
    cluster.start(first);
    await cluster.waitFor("the killed leader to rejoin", async () => {
      const s = await status(first);
      return s !== undefined && s.leader !== null ? true : undefined;
    }, 20_000);

    // Then wipe a follower's data dir and start it again: it rejoins as a replacement.
    await Bun.sleep(1500);
    const leader = await cluster.waitForLeader();
    const victim = names.find((name) => name !== leader)!;
    const member = cluster.member(victim);
    await cluster.kill(victim);
    rmSync(member.dataDir, { recursive: true, force: true });
    const logged = member.log.length;
    cluster.start(victim);
    await cluster.waitFor("the replacement to turn normal", async () => {
      const s = await status(victim);
      return s?.status === "normal" ? true : undefined;
    }, 30_000);
    expect(member.log.slice(logged).join("\n")).toContain("joining as a replacement");

    await Bun.sleep(1500);
    stopping = true;
    await Promise.all(workers);
    expect(outcomes.ok).toBeGreaterThan(100);
    expect(outcomes.holds).toBeGreaterThan(0);

    // Every hold expires within 2.5 s of log time; then the members converge.
    const settled = await cluster.waitFor(
      "every member to settle on the same applied index",
      async () => {
        const all = await Promise.all(names.map(status));
        if (all.some((s) => s === undefined)) return undefined;
        const service = all.map((s) => s!.service as { timers: number });
        if (service.some((s) => s.timers !== 0)) return undefined;
        const applied = all.map((s) => s!.appliedIndex);
        return applied.every((index) => index === applied[0]) && applied[0]! >= all[0]!.commitIndex
          ? all
          : undefined;
      },
      30_000,
    );
    expect(settled.length).toBe(3);

    const balances = await Promise.all(names.map((name) => query(name, { type: "balances" })));
    for (const view of balances) expect(view).toEqual(balances[0]!);
    const view = balances[0] as {
      accounts: Record<string, { balance: number; held: number }>;
      total: number;
      supply: number;
      consistent: boolean;
      holds: number;
    };
    expect(view.supply).toBe(supply);
    expect(view.total).toBe(supply);
    expect(view.consistent).toBe(true);
    expect(view.holds).toBe(0);
    let sum = 0;
    for (const [name, account] of Object.entries(view.accounts)) {
      expect({ name, negative: account.balance < 0 || account.held < 0 }).toEqual({
        name,
        negative: false,
      });
      sum += account.balance + account.held;
    }
    expect(sum).toBe(supply);

    // Holds: the same expiries, each once, at the same log position, on every member.
    const holds = await Promise.all(names.map((name) => query(name, { type: "holds" })));
    for (const h of holds) expect(h).toEqual(holds[0]!);
    const expiries = (holds[0] as { expiries: Array<{ hold: string; index: number }> }).expiries;
    expect(new Set(expiries.map((e) => e.hold)).size).toBe(expiries.length);
  },
  120_000,
);
