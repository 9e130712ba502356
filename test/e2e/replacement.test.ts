// End-to-end: host replacement (DESIGN §1 journeys 4 and 6, §3 R1-R8) with the compiled
// binary. A member's host dies for good; a new host with an empty data dir starts under
// the same name; the cluster fences it in; the old host coming back is refused.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, rmSync } from "node:fs";
import { binaryPath, TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;
const keys = new Map<string, string>();

beforeAll(() => {
  cluster = new TestCluster({ ipBase: 81, snapshotEntries: 500 });
  cluster.startAll();
});

afterAll(async () => {
  await cluster.stop();
});

async function readyz(name: string): Promise<number> {
  try {
    const response = await fetch(`${cluster.member(name).url}/readyz`, {
      signal: AbortSignal.timeout(1000),
    });
    return response.status;
  } catch {
    return 0;
  }
}

test("an empty member alone never forms a cluster: it waits for every member", async () => {
  const lonely = new TestCluster({ ipBase: 91, name: "lonely" });
  try {
    lonely.start("node-a");
    await Bun.sleep(2500);
    const status = await lonely.status("node-a");
    expect(status?.role).toBe("follower");
    expect(status?.term).toBe(0);
    expect((status as unknown as { status: string }).status).toBe("recovering");
    expect(lonely.member("node-a").log.join("\n")).toContain("waiting for every member");
  } finally {
    await lonely.stop();
  }
});

test(
  "a wiped member restarted under its name is fenced in, catches up and votes again",
  async () => {
    const leader = await cluster.waitForLeader();
    const names = cluster.members.map((m) => m.name);
    for (let i = 0; i < 1200; i++) keys.set(`r-${i}`, `v-${i}`);
    const entries = [...keys];
    for (let i = 0; i < entries.length; i += 40) {
      await Promise.all(
        entries.slice(i, i + 40).map(([key, value], j) =>
          cluster.putWithRetry([names[(i + j) % 3]!], key, value, `repl-${j}:${i + 1}`)
        ),
      );
    }
    const victim = names.find((name) => name !== leader)!;
    const old = cluster.member(victim);
    // Keep a copy of the old disk for the zombie test below.
    cpSync(old.dataDir, `${old.dataDir}-old`, { recursive: true });
    await cluster.kill(victim);
    rmSync(old.dataDir, { recursive: true, force: true });
    cluster.start(victim);

    const normal = await cluster.waitFor("the replacement to turn normal and ready", async () => {
      const status = await cluster.status(victim);
      if (status?.status !== "normal") return undefined;
      return (await readyz(victim)) === 200 ? status : undefined;
    }, 30_000);
    expect(normal.incarnation).not.toBe("");
    const log = old.log.join("\n");
    expect(log).toContain("joining as a replacement");
    expect(log).toContain("now a voting member");

    const missing: string[] = [];
    for (const [key, value] of keys) {
      const response = await cluster.get(victim, key, "stale");
      if ((await response.text()) !== value) missing.push(key);
    }
    expect(missing).toEqual([]);

    // With the replacement as a voter, the cluster survives losing the leader.
    const current = await cluster.waitForLeader();
    const survivor = names.find((name) => name !== current && name !== victim)!;
    await cluster.kill(current);
    const next = await cluster.waitForLeader([current], 20_000);
    expect([victim, survivor]).toContain(next);
    await cluster.putWithRetry([victim, survivor], "after-failover", "yes", "repl-final:1");
    cluster.start(current);
    await cluster.waitForLeader();
  },
  120_000,
);

test("the old host coming back with its old disk is refused and reports fenced", async () => {
  const names = cluster.members.map((m) => m.name);
  const statuses = await Promise.all(names.map((name) => cluster.status(name)));
  const replaced = cluster.members.find((m) =>
    m.log.join("\n").includes("joining as a replacement")
  )!;
  expect(replaced).toBeDefined();
  // The zombie: the old data dir, started beside the replacement on other local ports.
  const zombieDir = `${replaced.dataDir}-old`;
  const child = Bun.spawn([
    binaryPath,
    "run",
    "--config",
    cluster.configPath,
    "--name",
    replaced.name,
    "--data-dir",
    zombieDir,
    "--peer-listen",
    `${replaced.ip}:7170`,
    "--http-listen",
    `${replaced.ip}:7180`,
  ], { stdout: "ignore", stderr: "pipe" });
  const logLines: string[] = [];
  void (async () => {
    for await (const chunk of child.stderr as ReadableStream<Uint8Array>) {
      logLines.push(new TextDecoder().decode(chunk));
    }
  })();
  try {
    const fenced = await cluster.waitFor("the zombie to report fenced", async () => {
      try {
        const response = await fetch(`http://${replaced.ip}:7180/readyz?verbose`, {
          signal: AbortSignal.timeout(1000),
        });
        const body = await response.text();
        return response.status === 503 && body.includes("not_fenced") && body.includes("fenced:")
          ? body
          : undefined;
      } catch {
        return undefined;
      }
    }, 20_000);
    expect(fenced).toContain("replaced");
    expect(logLines.join("")).toContain("no longer serves");
    // Every member it dials refuses it, and raises the alarm of two live hosts (R8).
    const others = names.filter((name) => name !== replaced.name);
    const alarms = await cluster.waitFor("the two-live-hosts alarm on the others", async () => {
      const views = await Promise.all(others.map((name) => cluster.status(name)));
      const raised = views.map((view) =>
        view?.alarms.some((alarm) =>
          alarm.startsWith(`two live hosts claim member ${replaced.name}`)
        )
      );
      return raised.every((yes) => yes === true) ? views.map((view) => view!.alarms) : undefined;
    }, 20_000);
    expect(alarms.flat().join("\n")).toContain("(fenced) still dials while");
    // The cluster keeps committing, and its term did not move because of the zombie.
    const before = Math.max(...statuses.map((s) => s?.term ?? 0));
    await cluster.putWithRetry(names, "zombie-era", "still-fine", "zombie-check:1");
    const after = await cluster.status(names[0]!);
    expect(after!.term).toBe(before);
    const zombieWrite = await fetch(`http://${replaced.ip}:7180/v1/kv/from-zombie`, {
      method: "PUT",
      body: "x",
      signal: AbortSignal.timeout(5000),
    });
    expect(zombieWrite.status).toBeGreaterThanOrEqual(500);
  } finally {
    child.kill("SIGKILL");
    await child.exited;
  }
}, 60_000);

test(
  "a data dir restored from an old backup is detected, takes a new incarnation, and rejoins as a replacement",
  async () => {
    const leader = await cluster.waitForLeader();
    const names = cluster.members.map((m) => m.name);
    const victim = names.find((name) => name !== leader)!;
    const member = cluster.member(victim);
    // The "backup": a copy of the data dir taken while the member is stopped.
    await cluster.kill(victim);
    const backup = `${member.dataDir}-backup`;
    cpSync(member.dataDir, backup, { recursive: true });
    cluster.start(victim);
    await cluster.waitFor(
      "the member to be ready again",
      async () => (await readyz(victim)) === 200 ? true : undefined,
      20_000,
    );
    const before = await cluster.status(victim);
    for (let i = 0; i < 300; i++) {
      await cluster.putWithRetry(names, `after-backup-${i}`, `v${i}`, `backup-client:${i + 1}`);
    }
    await cluster.waitFor("the member to acknowledge the new writes", async () => {
      const status = await cluster.status(victim);
      return status !== undefined && status.appliedIndex >= before!.appliedIndex + 300
        ? true
        : undefined;
    });
    // Restore the old copy in place, as an operator restoring a backup would.
    await cluster.kill(victim);
    rmSync(member.dataDir, { recursive: true, force: true });
    cpSync(backup, member.dataDir, { recursive: true });
    cluster.start(victim);
    const child = member.process!;
    const code = await Promise.race([child.exited, Bun.sleep(20_000).then(() => "timeout")]);
    expect(code).toBe(75);
    member.process = undefined;
    expect(member.log.join("\n")).toContain("go back in time");
    // Started again (as a supervisor would), it is a replacement with a new incarnation.
    cluster.start(victim);
    const status = await cluster.waitFor(
      "the restored member to be fenced in as a new incarnation",
      async () => {
        const status = await cluster.status(victim);
        return status?.status === "normal" && status.incarnation !== before!.incarnation &&
            (await readyz(victim)) === 200
          ? status
          : undefined;
      },
      30_000,
    );
    expect(status.incarnation).not.toBe(before!.incarnation);
    const read = await cluster.get(victim, "after-backup-299", "stale");
    expect(await read.text()).toBe("v299");
  },
  90_000,
);
