// Measures host replacement with the compiled binary (DESIGN §1 journey 4):
// - DNS move: time from repointing a member's record to its peers dialling the new
//   address, at the given resolver.refresh (default 5 s, keel's default);
// - replacement: time from starting an empty host under the member's name to its
//   /readyz answering 200, for a given amount of state.
//
//   bun scripts/replacement_bench.ts [--keys=2000] [--value-bytes=100] [--refresh=5s]
//
// Prints one JSON line. Timings are measurements, never pass/fail.

import { rmSync } from "node:fs";
import { parseArgs } from "node:util";
import { TestCluster } from "../test/support/cluster.ts";
import { TestDnsServer } from "../test/support/dns_server.ts";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "2000" },
    "value-bytes": { type: "string", default: "100" },
    refresh: { type: "string", default: "5s" },
  },
});
const keys = Number(values.keys);
const valueBytes = Number(values["value-bytes"]);
const domain = "keel.bench";

const dns = await TestDnsServer.start({ hostname: "127.0.0.251" });
for (const [i, name] of ["node-a", "node-b", "node-c"].entries()) {
  dns.setRecord(`${name}.${domain}`, [`127.0.0.${244 + i}`], 1);
}
const cluster = new TestCluster({
  ipBase: 244,
  name: "replbench",
  dns: { server: `127.0.0.251:${dns.port}`, domain, refresh: values.refresh! },
});
try {
  cluster.startAll();
  await cluster.waitForLeader([], 30_000);
  const value = "v".repeat(valueBytes);
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: 16 }, async (_, worker) => {
    let seq = 0;
    while (next < keys) {
      const i = next++;
      await cluster.putWithRetry(
        ["node-a", "node-c"],
        `k-${i}`,
        value,
        `w${worker}:${++seq}`,
        60_000,
      );
    }
  }));
  const loadSeconds = (performance.now() - started) / 1000;
  const statusA = await cluster.status("node-a");

  // The host of node-b dies for good; its name moves to a new host with an empty disk.
  await cluster.kill("node-b");
  rmSync(cluster.member("node-b").dataDir, { recursive: true, force: true });
  cluster.moveTo("node-b", "127.0.0.247");
  cluster.start("node-b");
  const replacementStarted = performance.now();
  await Bun.sleep(200);
  const dnsChanged = performance.now();
  dns.setRecord(`node-b.${domain}`, ["127.0.0.247"], 1);
  let dnsMoveMs = 0;
  await cluster.waitFor("node-a to use node-b's new address", async () => {
    const status = await cluster.status("node-a") as unknown as {
      members: {
        name: string;
        connected: boolean;
        resolution: { address: string | null } | null;
      }[];
    };
    const b = status?.members.find((m) => m.name === "node-b");
    if (b?.resolution?.address === "127.0.0.247" && b.connected) {
      dnsMoveMs = performance.now() - dnsChanged;
      return true;
    }
    return undefined;
  }, 60_000);
  await cluster.waitFor("the replacement to be ready", async () => {
    try {
      const response = await fetch(`${cluster.member("node-b").url}/readyz`, {
        signal: AbortSignal.timeout(1000),
      });
      return response.status === 200 ? true : undefined;
    } catch {
      return undefined;
    }
  }, 600_000);
  const readySeconds = (performance.now() - replacementStarted) / 1000;
  const statusB = await cluster.status("node-b");
  console.log(JSON.stringify({
    keys,
    valueBytes,
    stateBytes: keys * valueBytes,
    refresh: values.refresh,
    loadSeconds: Number(loadSeconds.toFixed(1)),
    leaderSnapshotBytes: (statusA as unknown as { snapshotBytes: number }).snapshotBytes,
    dnsMoveMs: Math.round(dnsMoveMs),
    replacementReadySeconds: Number(readySeconds.toFixed(2)),
    catchUpMBps: Number((keys * valueBytes / 1e6 / readySeconds).toFixed(1)),
    replacementApplied: statusB?.appliedIndex,
    snapshotsInstalled: statusB?.counters.snapshotsInstalled,
  }));
} finally {
  await cluster.stop();
  dns.stop();
}
