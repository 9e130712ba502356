// End-to-end: a fresh cluster whose founding host never comes up (issue 12, defect 9).
// `keel run --form-without node-c` on the other two empty members forms the cluster; node-c
// started later joins as a replacement and is fenced in. The flag is refused for a data
// dir with state, for a name that is not another member, and for a set leaving no
// majority. The compiled binary on 127.0.0.121-123.

import { afterAll, expect, test } from "bun:test";
import { binaryPath, TestCluster } from "../support/cluster.ts";

const cluster = new TestCluster({ ipBase: 121, name: "form-without" });

afterAll(async () => {
  await cluster.stop();
});

async function runOnce(args: string[]): Promise<{ code: number; stderr: string }> {
  const child = Bun.spawn([binaryPath, "run", "--config", cluster.configPath, ...args], {
    stdout: "ignore",
    stderr: "pipe",
  });
  const code = await Promise.race([child.exited, Bun.sleep(10_000).then(() => -1)]);
  if (code === -1) child.kill("SIGKILL");
  return { code, stderr: await new Response(child.stderr as ReadableStream).text() };
}

test(
  "a name that is not another member, or a set leaving no majority, is refused (exit 2)",
  async () => {
    const dataDir = `${cluster.dir}/refused`;
    const stranger = await runOnce([
      "--name",
      "node-a",
      "--data-dir",
      dataDir,
      "--form-without",
      "node-x",
    ]);
    expect(stranger.code).toBe(2);
    expect(stranger.stderr).toContain('"node-x" is not a member');
    const self = await runOnce([
      "--name",
      "node-a",
      "--data-dir",
      dataDir,
      "--form-without",
      "node-a",
    ]);
    expect(self.code).toBe(2);
    expect(self.stderr).toContain("is this member");
    const minority = await runOnce([
      "--name",
      "node-a",
      "--data-dir",
      dataDir,
      "--form-without",
      "node-b,node-c",
    ]);
    expect(minority.code).toBe(2);
    expect(minority.stderr).toContain("needs a majority (2)");
  },
  40_000,
);

test(
  "two empty members form the cluster without the third, which later joins as a replacement",
  async () => {
    // Without the flag, two of three never form a cluster (replacement.test.ts shows one alone).
    cluster.start("node-a", ["--form-without", "node-c"]);
    cluster.start("node-b", ["--form-without", "node-c"]);
    const leader = await cluster.waitForLeader(["node-c"]);
    expect(["node-a", "node-b"]).toContain(leader);
    const write = await cluster.put(leader, "formed-without-c", "yes");
    expect(write.status).toBe(200);
    expect(cluster.member(leader).log.join("\n")).toContain("forming a new cluster without");

    cluster.start("node-c");
    const joined = await cluster.waitFor("node-c fenced in and caught up", async () => {
      const status = await cluster.status("node-c");
      return status?.status === "normal" && status.appliedIndex >= 1 ? status : undefined;
    }, 30_000);
    expect(joined.status).toBe("normal");
    expect(cluster.member("node-c").log.join("\n")).toContain("joining as a replacement");
    const read = await cluster.get("node-c", "formed-without-c", "stale");
    expect(await read.text()).toBe("yes");
  },
  60_000,
);

test("the flag is refused for a data dir that has state", async () => {
  await cluster.kill("node-b");
  cluster.start("node-b", ["--form-without", "node-c"]);
  const code = await Promise.race([
    cluster.member("node-b").process!.exited,
    Bun.sleep(10_000).then(() => -1),
  ]);
  cluster.member("node-b").process = undefined;
  expect(code).toBe(2);
  expect(cluster.member("node-b").log.join("\n")).toContain("has state: it forms no new cluster");
}, 30_000);
