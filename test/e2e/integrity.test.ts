// End-to-end: a byte that rots on one member's disk is never served; the member moves its
// data dir aside and rejoins as a replacement (issue 13). The compiled binary on
// 127.0.0.131-133: a committed value is changed in a stopped follower's keel.db ("good" to
// "baad", as a flipped sector would), and the follower is started again.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestCluster } from "../support/cluster.ts";

let cluster: TestCluster;
const keyCount = 300;
const value = (i: number) => `good-value-${String(i).padStart(4, "0")}-${"x".repeat(40)}`;

beforeAll(() => {
  cluster = new TestCluster({ ipBase: 131, name: "integrity" });
  cluster.startAll();
});

afterAll(async () => {
  await cluster.stop();
});

/** rot changes the first occurrence of `from` in the data dir's database files. */
function rot(dataDir: string, from: string, to: string): string {
  const needle = new TextEncoder().encode(from);
  for (const file of ["keel.db", "keel.db-wal"]) {
    const path = join(dataDir, file);
    if (!existsSync(path)) continue;
    const bytes = readFileSync(path);
    const at = bytes.indexOf(needle);
    if (at < 0) continue;
    bytes.set(new TextEncoder().encode(to), at);
    writeFileSync(path, bytes);
    return path;
  }
  throw new Error(`"${from}" is in no database file of ${dataDir}`);
}

test(
  "a follower whose stored value rotted never serves it, heals from its peers and is ready",
  async () => {
    const leader = await cluster.waitForLeader();
    for (let i = 1; i <= keyCount; i++) {
      const response = await cluster.put(leader, `key-${i}`, value(i));
      expect(response.status).toBe(200);
    }
    const follower = cluster.members.find((m) => m.name !== leader)!.name;
    await cluster.waitFor("the follower applied every write", async () => {
      const [mine, theirs] = await Promise.all([cluster.status(follower), cluster.status(leader)]);
      return mine && theirs && mine.appliedIndex >= theirs.commitIndex ? true : undefined;
    });
    await cluster.kill(follower, "SIGTERM");
    const dataDir = cluster.member(follower).dataDir;
    rot(dataDir, "good-value-0300", "baad-value-0300");

    cluster.start(follower);
    const rotten: string[] = [];
    const ready = await cluster.waitFor("the healed follower serving the right value", async () => {
      for (const consistency of ["stale", "linearizable"] as const) {
        try {
          const read = await cluster.get(follower, "key-300", consistency);
          const text = await read.text();
          if (text.startsWith("baad")) rotten.push(`${consistency}: ${text}`);
          if (consistency === "linearizable" && read.status === 200 && text === value(300)) {
            const readyz = await fetch(`${cluster.member(follower).url}/readyz`);
            if (readyz.status === 200) return true;
          }
        } catch {
          // Not up yet.
        }
      }
      return undefined;
    }, 20_000);
    expect(ready).toBe(true);
    expect(rotten).toEqual([]);
    const log = cluster.member(follower).log.join("\n");
    expect(log).toContain("fails its checksums");
    expect(log).toContain("joining as a replacement");
    // The damaged files are kept aside, never deleted.
    const kept = readdirSync(dataDir).filter((name) => name.startsWith("quarantined-"));
    expect(kept.length).toBe(1);
    expect(existsSync(join(dataDir, kept[0]!, "keel.db"))).toBe(true);
    // Every other key reads right from the healed member.
    const sample = await cluster.get(follower, "key-17", "stale");
    expect(await sample.text()).toBe(value(17));
  },
  90_000,
);

test(
  "the same on the leader: it hands over, and after the rot rejoins as a replacement",
  async () => {
    const leader = await cluster.waitForLeader();
    await cluster.kill(leader, "SIGTERM");
    const next = await cluster.waitForLeader([leader]);
    rot(cluster.member(leader).dataDir, "good-value-0150", "baad-value-0150");
    // A write while it is down: the rejoined member must catch up past its old log too.
    expect((await cluster.put(next, "after-rot", "fresh")).status).toBe(200);
    cluster.start(leader);
    const healed = await cluster.waitFor("the old leader healed", async () => {
      try {
        const read = await cluster.get(leader, "key-150", "linearizable");
        const text = await read.text();
        expect(text.startsWith("baad")).toBe(false);
        return read.status === 200 && text === value(150) ? text : undefined;
      } catch {
        return undefined;
      }
    }, 20_000);
    expect(healed).toBe(value(150));
    expect(await (await cluster.get(leader, "after-rot", "stale")).text()).toBe("fresh");
    expect(cluster.member(leader).log.join("\n")).toContain("fails its checksums");
  },
  90_000,
);
