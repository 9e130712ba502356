// End-to-end: a member whose storage write fails acknowledges nothing it did not store, and
// its process ends (exit 74) instead of carrying on (issue 12, defect 1). The compiled
// binary on 127.0.0.141-143; one member's data dir on a small tmpfs that fills up.
//
// Needs root (mount -t tmpfs); elsewhere these tests are skipped and say so.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { binaryPath, TestCluster } from "../support/cluster.ts";

const adminToken = "e2e-storage-admin-token";
const valueBytes = 10 * 1024;
/** A tmpfs this small fills after a few hundred 10 KiB writes. */
const tmpfsSize = "3m";
/** Bounds on the write loop: it ends when the member exits, or at these. */
const writesMax = 2_000;
const writeLoopMsMax = 60_000;

function sh(command: string[]): { ok: boolean; output: string } {
  const result = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe" });
  return {
    ok: result.exitCode === 0,
    output: result.stdout.toString() + result.stderr.toString(),
  };
}

/** canMountTmpfs: root with a working mount(8), probed once with a throwaway mount. */
function canMountTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = mkdtempSync(join(tmpdir(), "keel-tmpfs-probe-"));
  const mounted = sh(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe]).ok;
  if (mounted) sh(["umount", probe]);
  rmSync(probe, { recursive: true, force: true });
  return mounted;
}

const mountable = canMountTmpfs();
if (!mountable) {
  console.warn(
    "storage_failure.test.ts: skipped: needs root and mount -t tmpfs to fill a data dir",
  );
}

/** lastStoredIndex reads the highest log index in a stopped member's data dir (a copy). */
function lastStoredIndex(dataDir: string): number {
  const copy = mkdtempSync(join(tmpdir(), "keel-db-copy-"));
  try {
    for (const file of ["keel.db", "keel.db-wal"]) {
      if (existsSync(join(dataDir, file))) copyFileSync(join(dataDir, file), join(copy, file));
    }
    const db = new Database(join(copy, "keel.db"));
    try {
      const row = db.query(`SELECT max("index") AS last FROM log`).get() as
        | { last: number | null }
        | null;
      const snapshot = db.query(`SELECT max("index") AS at FROM snapshot`).get() as
        | { at: number | null }
        | null;
      return Math.max(row?.last ?? 0, snapshot?.at ?? 0);
    } finally {
      db.close();
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

async function adminPost(cluster: TestCluster, name: string, path: string): Promise<Response> {
  return await fetch(`${cluster.member(name).url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}` },
    signal: AbortSignal.timeout(15_000),
  });
}

/**
 * writeUntilExit writes 10 KiB values through `via` until `member` exits (or the loop's
 * bounds), and returns every acknowledged index.
 */
async function writeUntilExit(
  cluster: TestCluster,
  via: () => string,
  member: string,
): Promise<number[]> {
  const acked: number[] = [];
  const value = "v".repeat(valueBytes);
  const started = Date.now();
  const child = cluster.member(member).process!;
  for (let i = 0; i < writesMax && Date.now() - started < writeLoopMsMax; i++) {
    if (child.exitCode !== null) break;
    try {
      const response = await fetch(`${cluster.member(via()).url}/v1/kv/fill-${i}`, {
        method: "PUT",
        body: value,
        signal: AbortSignal.timeout(3_000),
      });
      if (response.ok) acked.push((await response.json() as { index: number }).index);
      else await response.body?.cancel();
    } catch {
      // A timeout or refused connection: not acknowledged.
    }
  }
  return acked;
}

async function exitCode(cluster: TestCluster, name: string, timeoutMs = 20_000): Promise<number> {
  const child = cluster.member(name).process!;
  const code = await Promise.race([child.exited, Bun.sleep(timeoutMs).then(() => null)]);
  if (code === null) {
    throw new Error(`${name} did not exit within ${timeoutMs} ms\n${cluster.tails(30)}`);
  }
  cluster.member(name).process = undefined;
  return code;
}

describe.skipIf(!mountable)("a member whose disk fills", () => {
  let cluster: TestCluster;
  let mountPoint: string;

  beforeAll(() => {
    cluster = new TestCluster({
      binary: process.env.KEEL_BINARY ?? binaryPath,
      ipBase: 141,
      name: "storage-e2e",
      extraYaml: `security:\n  admin_token: "${adminToken}"`,
    });
    // node-c's data dir is a small tmpfs.
    mountPoint = cluster.member("node-c").dataDir;
    mkdirSync(mountPoint, { recursive: true });
    const mounted = sh(["mount", "-t", "tmpfs", "-o", `size=${tmpfsSize}`, "tmpfs", mountPoint]);
    if (!mounted.ok) throw new Error(`mount tmpfs failed: ${mounted.output}`);
  });

  afterAll(async () => {
    await cluster.stop().catch(() => {});
    sh(["umount", "-l", mountPoint]);
  });

  test("a follower stops and acknowledges nothing it did not store", async () => {
    cluster.startAll();
    let leader = await cluster.waitForLeader();
    if (leader === "node-c") {
      const moved = await adminPost(cluster, "node-c", "/admin/step-down?to=node-a");
      expect(moved.status).toBe(200);
      leader = await cluster.waitForLeader(["node-c"]);
    }
    // With the other follower gone, every commit needs node-c's acknowledgement.
    const other = ["node-a", "node-b"].find((name) => name !== leader)!;
    await cluster.kill(other);
    const acked = await writeUntilExit(cluster, () => leader, "node-c");

    const code = await exitCode(cluster, "node-c");
    expect(code).toBe(74);
    expect(cluster.member("node-c").log.join("\n")).toContain("Storage failed");
    // The test means something only if writes were acknowledged before the disk filled.
    expect(acked.length).toBeGreaterThan(10);
    const stored = lastStoredIndex(cluster.member("node-c").dataDir);
    // Every acknowledged write is on a majority: here, on node-c's disk.
    expect(Math.max(...acked)).toBeLessThanOrEqual(stored);
    cluster.start(other);
  }, 120_000);

  test("a leader whose disk fills gives up leading; enlarged, it catches up", async () => {
    // Room for a little more, then node-c starts again and catches up.
    expect(sh(["mount", "-o", "remount,size=6m", mountPoint]).ok).toBe(true);
    cluster.start("node-c");
    const running = ["node-a", "node-b"];
    // node-c may lead at once: its log is the longest (the writes the others never stored).
    let leader = await cluster.waitForLeader();
    await cluster.waitFor("node-c caught up", async () => {
      const [mine, theirs] = await Promise.all([
        cluster.status("node-c"),
        cluster.status(leader),
      ]);
      return mine !== undefined && theirs !== undefined &&
          mine.appliedIndex >= theirs.commitIndex
        ? true
        : undefined;
    }, 30_000);
    if (leader !== "node-c") {
      const moved = await adminPost(cluster, leader, "/admin/step-down?to=node-c");
      expect(moved.status).toBe(200);
      leader = await cluster.waitForLeader();
    }
    expect(leader).toBe("node-c");

    const acked = await writeUntilExit(cluster, () => "node-c", "node-c");
    expect(await exitCode(cluster, "node-c")).toBe(74);
    expect(acked.length).toBeGreaterThan(0);
    expect(Math.max(...acked)).toBeLessThanOrEqual(lastStoredIndex(mountPoint));

    // The others elect a leader and keep committing.
    const next = await cluster.waitForLeader(["node-c"]);
    expect(running).toContain(next);
    const afterwards = await cluster.put(next, "after-leader-disk-full", "ok");
    expect(afterwards.status).toBe(200);

    // The cause goes away: with room on its disk, node-c starts and catches up.
    expect(sh(["mount", "-o", "remount,size=64m", mountPoint]).ok).toBe(true);
    cluster.start("node-c");
    await cluster.waitFor("node-c applied everything after its disk was enlarged", async () => {
      const [mine, theirs] = await Promise.all([cluster.status("node-c"), cluster.status(next)]);
      return mine !== undefined && theirs !== undefined && mine.appliedIndex >= theirs.commitIndex
        ? true
        : undefined;
    }, 30_000);
    const read = await cluster.get("node-c", "after-leader-disk-full", "stale");
    expect(await read.text()).toBe("ok");
  }, 180_000);
});
