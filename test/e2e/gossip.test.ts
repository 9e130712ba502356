// End-to-end: the name scheme drill (issue 3, drill 2; DESIGN §1 journey 5) with the
// compiled binary. Members are listed by name alone; each node advertises the addresses
// it listens on through gossip, with node-a's gossip address as the one bootstrap
// neighbour. node-b's host dies for good; a new host at a new address starts under the
// same name with an empty data dir; peers adopt its address from gossip, the cluster
// fences it in, it catches up and votes again.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { binaryPath, type StatusBody, TestCluster } from "../support/cluster.ts";

const ipBase = 101; // node-a 127.0.0.101, node-b .102, node-c .103
const replacementIp = "127.0.0.105";
const keyCount = 500;

let cluster: TestCluster;

/** listenArgs binds a member's peer, http and gossip ports on its current address. */
function listenArgs(name: string): string[] {
  const ip = cluster.member(name).ip;
  const args = ["--peer-listen", `${ip}:7070`, "--http-listen", `${ip}:7080`];
  // node-c relies on the default: the --peer-listen host at gossip.port.
  return name === "node-c" ? args : [...args, "--gossip-listen", `${ip}:7071`];
}

async function status(name: string): Promise<StatusBody | undefined> {
  return await cluster.status(name);
}

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

beforeAll(() => {
  cluster = new TestCluster({ ipBase, name: "gossip", snapshotEntries: 200 });
  // The same shared file for every host: names only, one bootstrap neighbour.
  writeFileSync(
    cluster.configPath,
    [
      "cluster_name: gossip",
      "members:",
      "  - name: node-a",
      "  - name: node-b",
      "  - name: node-c",
      "gossip:",
      `  neighbours: ["127.0.0.${ipBase}:7071"]`,
      "  interval: 500ms",
      "  full_interval: 2s",
      "  expiry: 6s",
      "raft:",
      "  election_timeout: 600ms",
      "  heartbeat_interval: 60ms",
      "  snapshot_entries: 200",
      "log:",
      "  level: info",
      "",
    ].join("\n"),
  );
  for (const member of cluster.members) cluster.start(member.name, listenArgs(member.name));
});

afterAll(async () => {
  await cluster.stop();
});

test("a member found by gossip without --peer-listen is refused with exit 2", async () => {
  const child = Bun.spawn([
    binaryPath,
    "run",
    "--config",
    cluster.configPath,
    "--name",
    "node-a",
    "--data-dir",
    `${cluster.dir}/unused`,
  ], { stdout: "ignore", stderr: "pipe" });
  const stderr = await new Response(child.stderr as ReadableStream).text();
  expect(await child.exited).toBe(2);
  expect(stderr).toContain("--peer-listen HOST:PORT and --http-listen HOST:PORT");
});

test(
  "a replacement host under the same name is found by gossip, fenced in, and votes again",
  async () => {
    const names = cluster.members.map((m) => m.name);
    await cluster.waitForLeader([], 30_000);

    // Every node learned every other's addresses by gossip alone.
    const first = await status("node-a");
    const b = first?.members.find((m) => m.name === "node-b");
    expect(b?.peer).toBe("127.0.0.102:7070");
    expect(b?.http).toBe("http://127.0.0.102:7080");
    expect(b?.gossip?.peer).toBe("127.0.0.102:7070");
    const oldIncarnation = b?.gossip?.incarnation;

    // Writes through every node: followers forward to the leader's gossiped http address.
    const keys = Array.from({ length: keyCount }, (_, i) => [`g-${i}`, `v-${i}`] as const);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(
        keys.slice(i, i + 50).map(([key, value], j) =>
          cluster.putWithRetry([names[(i + j) % 3]!], key, value, `gossip-${i + j}:1`)
        ),
      );
    }

    // node-b's host dies for good; a new host with an empty disk takes its name.
    const victim = cluster.member("node-b");
    await cluster.kill("node-b");
    rmSync(victim.dataDir, { recursive: true, force: true });
    cluster.moveTo("node-b", replacementIp);
    const startedAt = Date.now();
    cluster.start("node-b", listenArgs("node-b"));

    // Peers adopt the new address from gossip within a few seconds.
    await cluster.waitFor("node-a and node-c to adopt node-b's new address", async () => {
      const views = await Promise.all(["node-a", "node-c"].map((name) => status(name)));
      return views.every((view) =>
          view?.members.find((m) => m.name === "node-b")?.peer === `${replacementIp}:7070`
        )
        ? true
        : undefined;
    }, 10_000);
    const adoptedMs = Date.now() - startedAt;

    const normal = await cluster.waitFor("the replacement to turn normal and ready", async () => {
      const view = await status("node-b");
      if (view?.status !== "normal") return undefined;
      return (await readyz("node-b")) === 200 ? view : undefined;
    }, 60_000);
    const readyMs = Date.now() - startedAt;
    console.log(`gossip drill: address adopted after ${adoptedMs} ms, ready after ${readyMs} ms`);
    expect(normal.incarnation).not.toBe(oldIncarnation);
    const log = victim.log.join("\n");
    expect(log).toContain("joining as a replacement");
    expect(log).toContain("refuting a claim for this node's name");

    const missing: string[] = [];
    for (const [key, value] of keys) {
      const response = await cluster.get("node-b", key, "stale");
      if ((await response.text()) !== value) missing.push(key);
    }
    expect(missing).toEqual([]);

    // The old address never came back: every peer still points at the replacement.
    for (const name of ["node-a", "node-c"]) {
      const view = await status(name);
      const entry = view?.members.find((m) => m.name === "node-b");
      expect(entry?.peer).toBe(`${replacementIp}:7070`);
      expect(entry?.gossip?.incarnation).toBe(normal.incarnation);
      expect(entry?.gossip?.changes).toBe(1);
      expect(entry?.connected).toBe(true);
    }

    // With the replacement as a voter, the cluster survives losing the leader: two of
    // three members must agree, so every election and commit from here needs node-b.
    const leader = await cluster.waitForLeader();
    const survivors = names.filter((name) => name !== leader);
    expect(survivors).toContain("node-b");
    await cluster.kill(leader);
    const next = await cluster.waitForLeader([leader], 20_000);
    expect(survivors).toContain(next);
    await cluster.putWithRetry(survivors, "after-failover", "yes", "gossip-final:1");
    const read = await cluster.get("node-b", "after-failover");
    expect(await read.text()).toBe("yes");
  },
  150_000,
);
