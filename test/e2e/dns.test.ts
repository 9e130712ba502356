// End-to-end drills of the DNS scheme (DESIGN §1 journeys 4, 7, 8) with the compiled
// binary and a real DNS server over UDP on loopback: members are named node-X.keel.test
// in the shared config; the test repoints a record as an operator would.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { binaryPath, TestCluster } from "../support/cluster.ts";
import { TestDnsServer } from "../support/dns_server.ts";

const domain = "keel.test";
let dns: TestDnsServer;
let cluster: TestCluster;
const keys = new Map<string, string>();

beforeAll(async () => {
  dns = await TestDnsServer.start({ hostname: "127.0.0.61" });
  for (const [i, name] of ["node-a", "node-b", "node-c"].entries()) {
    dns.setRecord(`${name}.${domain}`, [`127.0.0.${111 + i}`], 1);
  }
  cluster = new TestCluster({
    ipBase: 111,
    name: "dns",
    dns: { server: `127.0.0.61:${dns.port}`, domain, refresh: "1s" },
    snapshotEntries: 800,
  });
  cluster.startAll();
});

afterAll(async () => {
  await cluster.stop();
  dns.stop();
});

interface Resolution {
  address: string | null;
  consecutiveFailures: number;
  totalFailures: number;
  lastSuccessAt: number | null;
}

async function resolutions(name: string): Promise<Map<string, Resolution>> {
  const status = await cluster.status(name) as unknown as {
    members: { name: string; resolution: Resolution | null }[];
  };
  return new Map(
    status.members.filter((m) => m.resolution !== null).map((m) => [m.name, m.resolution!]),
  );
}

test("a cluster addressed by DNS names forms and takes 2000 writes", async () => {
  await cluster.waitForLeader();
  const names = cluster.members.map((m) => m.name);
  for (let i = 0; i < 2000; i++) keys.set(`dns-${i}`, `value-${i}`);
  const entries = [...keys];
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async (_, worker) => {
    let seq = 0;
    while (next < entries.length) {
      const [key, value] = entries[next++]!;
      await cluster.putWithRetry([names[seq % 3]!], key, value, `dns-w${worker}:${++seq}`);
    }
  }));
  const view = await resolutions("node-a");
  expect(view.get("node-b")?.address).toBe("127.0.0.112");
}, 90_000);

test(
  "drill: node-b's host dies for good; its DNS name moves to a new host that rejoins as a replacement",
  async () => {
    const old = cluster.member("node-b");
    await cluster.kill("node-b");
    rmSync(old.dataDir, { recursive: true, force: true });
    dns.setRecord(`node-b.${domain}`, ["127.0.0.114"], 1);
    cluster.moveTo("node-b", "127.0.0.114");
    const startedAt = Date.now();
    cluster.start("node-b");

    await cluster.waitFor("the peers to re-resolve node-b to its new address", async () => {
      const view = await resolutions("node-a");
      return view.get("node-b")?.address === "127.0.0.114" ? true : undefined;
    }, 15_000);
    await cluster.waitFor("the replacement to be normal and ready", async () => {
      const status = await cluster.status("node-b") as unknown as { status: string } | undefined;
      if (status?.status !== "normal") return undefined;
      const ready = await fetch(`${cluster.member("node-b").url}/readyz`, {
        signal: AbortSignal.timeout(1000),
      });
      return ready.status === 200 ? true : undefined;
    }, 60_000);
    const seconds = (Date.now() - startedAt) / 1000;
    expect(seconds).toBeGreaterThan(0);

    const missing: string[] = [];
    const entries = [...keys];
    for (let i = 0; i < entries.length; i += 100) {
      await Promise.all(
        entries.slice(i, i + 100).map(async ([key, value]) => {
          const response = await cluster.get("node-b", key, "stale");
          if ((await response.text()) !== value) missing.push(key);
        }),
      );
    }
    expect(missing).toEqual([]);

    // The replacement is a voter: the cluster survives losing its leader.
    const leader = await cluster.waitForLeader();
    await cluster.kill(leader);
    const next = await cluster.waitForLeader([leader], 20_000);
    expect(next).not.toBe(leader);
    const survivors = cluster.members.map((m) => m.name).filter((name) => name !== leader);
    await cluster.putWithRetry(survivors, "after-dns-failover", "ok", "dns-final:1");
    cluster.start(leader);
    await cluster.waitForLeader();
  },
  120_000,
);

test(
  "drill: DNS stops answering; nodes keep their last good addresses and report the failures",
  async () => {
    dns.setMode("outage");
    try {
      await cluster.waitFor("resolution failures to show on /status", async () => {
        const view = await resolutions("node-a");
        const failing = [...view.values()].filter((r) => r.consecutiveFailures >= 2);
        return failing.length >= 2 ? true : undefined;
      }, 20_000);
      const view = await resolutions("node-a");
      expect(view.get("node-b")?.address).toBe("127.0.0.114");
      const names = cluster.members.map((m) => m.name);
      await cluster.putWithRetry(names, "during-dns-outage", "still-works", "dns-outage:1");
      const metrics = await (await fetch(`${cluster.member("node-a").url}/metrics`)).text();
      expect(metrics).toContain("keel_dns_lookup_failures_total");
    } finally {
      dns.setMode("normal");
    }
  },
  60_000,
);

test(
  "drill: a node started with a different config is refused, naming the differing fields",
  async () => {
    const text = await Bun.file(cluster.configPath).text();
    const altered = text.replace(/election_timeout: \S+/, "election_timeout: 900ms");
    expect(altered).not.toBe(text);
    const path = join(cluster.dir, "altered.yaml");
    writeFileSync(path, altered);
    const child = Bun.spawn([
      binaryPath,
      "run",
      "--config",
      path,
      "--name",
      "node-c",
      "--data-dir",
      join(cluster.dir, "altered-data"),
      "--peer-listen",
      "127.0.0.119:7070",
      "--http-listen",
      "127.0.0.119:7080",
    ], { stdout: "ignore", stderr: "pipe" });
    let log = "";
    const reading = (async () => {
      for await (const chunk of child.stderr as ReadableStream<Uint8Array>) {
        log += new TextDecoder().decode(chunk);
      }
    })();
    try {
      await cluster.waitFor(
        "the altered node to be refused",
        async () => log.includes("refused our handshake") ? true : undefined,
        15_000,
      );
      expect(log).toContain("raft.election_timeout");
      await cluster.waitFor("a peer to log the differing fields", async () => {
        const text = cluster.member("node-a").log.join("\n") +
          cluster.member("node-b").log.join("\n");
        return text.includes("Refused the handshake") && text.includes("raft.election_timeout")
          ? true
          : undefined;
      }, 10_000);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
      await reading.catch(() => {});
    }
  },
  60_000,
);
