// End-to-end: /readyz, /healthz, /metrics and the admin API of the compiled binary, three
// real processes on 127.0.0.31-33 (DESIGN §8, issue 4). Readiness must never claim more
// than the node knows: 503 without a leader, 503 on a follower cut off from the leader once
// the election timeout passes, 200 otherwise, and ?role=leader on exactly one node.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { type StatusBody, TestCluster } from "../support/cluster.ts";
import { family, histogramSeries, parseExposition, sampleValue } from "../support/prometheus.ts";

const adminToken = "e2e-ops-admin-token";
// A slow election (1 s, randomized up to 2 s) keeps "was leadership handed over, or was a
// leader elected after the old one died?" answerable from timing alone (see shutdown test).
const electionTimeoutMs = 1000;
const peerPort = 7070;
/** Where the partitioned follower really listens; the proxy sits on its configured port. */
const hiddenPeerPort = 7170;

let cluster: TestCluster;
let proxy: TcpProxy | undefined;

beforeAll(() => {
  cluster = new TestCluster({
    ipBase: 31,
    peerPort,
    electionTimeout: `${electionTimeoutMs}ms`,
    heartbeatInterval: "100ms",
    extraYaml: `security:\n  admin_token: "${adminToken}"`,
  });
});

afterAll(async () => {
  proxy?.close();
  await cluster.stop();
});

const names = (): string[] => cluster.members.map((m) => m.name);

interface Readyz {
  status: number;
  body: { status: string; checks?: { name: string; ok: boolean; detail: string }[] };
}

async function readyz(name: string, query = "?verbose"): Promise<Readyz | undefined> {
  try {
    const response = await fetch(`${cluster.member(name).url}/readyz${query}`, {
      signal: AbortSignal.timeout(1000),
    });
    return { status: response.status, body: await response.json() as Readyz["body"] };
  } catch {
    return undefined;
  }
}

function admin(name: string, path: string, token: string | null = adminToken): Promise<Response> {
  return fetch(`${cluster.member(name).url}${path}`, {
    method: "POST",
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
}

/** waitAllReady waits until every running member answers /readyz 200. */
async function waitAllReady(running = names()): Promise<void> {
  await cluster.waitFor("every running member to be ready", async () => {
    const answers = await Promise.all(running.map((name) => readyz(name, "")));
    return answers.every((answer) => answer?.status === 200) ? true : undefined;
  });
}

function isRunning(name: string): boolean {
  return cluster.member(name).process?.exitCode === null;
}

/**
 * readyWithoutLeader asks /status, /readyz and /status again. When both statuses say "no
 * leader" in the same term, the node knew no leader all along, and /readyz must have been
 * 503; message says so when it was not. `after` is the second status.
 */
async function readyWithoutLeader(
  name: string,
): Promise<{ message: string | undefined; after: StatusBody | undefined }> {
  const before = await cluster.status(name);
  const ready = await readyz(name);
  const after = await cluster.status(name);
  const leaderless = before !== undefined && after !== undefined && before.leader === null &&
    after.leader === null && before.term === after.term;
  return {
    message: ready?.status === 200 && leaderless
      ? `${name} was ready with no leader in term ${before.term}`
      : undefined,
    after,
  };
}

async function leadersByReadyz(running = names()): Promise<string[]> {
  const answers = await Promise.all(running.map((name) => readyz(name, "?role=leader")));
  return running.filter((_, i) => answers[i]?.status === 200);
}

describe("readiness", () => {
  test("a node alone cannot elect a leader, so it is never ready, though healthy", async () => {
    cluster.start("node-a");
    const first = await cluster.waitFor("node-a to answer /readyz", () => readyz("node-a"));
    // Watch through more than two election timeouts: alone it never has a leader (an empty
    // node waits for every member to form a cluster; one with state would campaign and fail).
    const deadline = Date.now() + 2.5 * electionTimeoutMs;
    let answers = 0;
    let answer: Readyz | undefined = first;
    for (; Date.now() < deadline; answer = await readyz("node-a")) {
      expect(answer?.status).toBe(503);
      const leaderKnown = answer?.body.checks?.find((check) => check.name === "leader_known");
      expect(leaderKnown?.ok).toBe(false);
      answers++;
      await Bun.sleep(50);
    }
    expect(answers).toBeGreaterThan(10);
    expect((await readyz("node-a", "?role=leader"))?.status).toBe(503);
    const health = await fetch(`${cluster.member("node-a").url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok" });
  }, 20_000);

  test(
    "once a leader is elected all three are ready and ?role=leader is 200 on exactly one",
    async () => {
      cluster.start("node-b");
      cluster.start("node-c");
      const leader = await cluster.waitForLeader();
      await waitAllReady();
      expect(await leadersByReadyz()).toEqual([leader]);
      const verbose = await readyz(leader, "?verbose&role=leader");
      expect(verbose?.body.checks?.every((check) => check.ok)).toBe(true);
      expect(verbose?.body.checks?.map((check) => check.name)).toContain("leader_known");
    },
    30_000,
  );

  test("after kill -9 of the leader, no survivor is ready while it knows no leader", async () => {
    const oldLeader = await cluster.waitForLeader();
    await waitAllReady();
    const survivors = names().filter((name) => name !== oldLeader);
    await cluster.kill(oldLeader);
    const violations: string[] = [];
    let newLeader: string | undefined;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && newLeader === undefined) {
      await Promise.all(survivors.map(async (name) => {
        const { message, after } = await readyWithoutLeader(name);
        if (message !== undefined) violations.push(message);
        if (after?.role === "leader") newLeader = name;
      }));
      await Bun.sleep(10);
    }
    expect(violations).toEqual([]);
    expect(newLeader).toBeDefined();
    expect(newLeader).not.toBe(oldLeader);
  }, 30_000);

  test(
    "a survivor without a majority is not ready within the election timeout, and stays so",
    async () => {
      const leader = await cluster.waitForLeader(names().filter((n) => !isRunning(n)));
      const lone = names().find((name) => name !== leader && isRunning(name))!;
      await cluster.kill(leader);
      const killedAt = Date.now();
      await cluster.waitFor(`${lone} to report 503 alone`, async () => {
        const ready = await readyz(lone, "");
        return ready?.status === 503 ? true : undefined;
      }, 3 * electionTimeoutMs);
      expect(Date.now() - killedAt).toBeLessThan(3 * electionTimeoutMs);
      // It campaigns and fails again and again: never ready, never a leader.
      const watchUntil = Date.now() + 2.5 * electionTimeoutMs;
      const violations: string[] = [];
      while (Date.now() < watchUntil) {
        const ready = await readyz(lone);
        if (ready?.status !== 503) violations.push(`readyz answered ${ready?.status}`);
        const { message } = await readyWithoutLeader(lone);
        if (message !== undefined) violations.push(message);
        await Bun.sleep(50);
      }
      expect(violations).toEqual([]);
      for (const name of names().filter((n) => !isRunning(n))) cluster.start(name);
      await cluster.waitForLeader();
      await waitAllReady();
      expect((await leadersByReadyz()).length).toBe(1);
    },
    40_000,
  );

  test(
    "a follower cut off from the leader is not ready once the election timeout passes",
    async () => {
      const leader = await cluster.waitForLeader();
      const follower = names().find((name) => name !== leader)!;
      const other = names().find((name) => name !== leader && name !== follower)!;
      const ip = cluster.member(follower).ip;
      // Restart the follower listening on a hidden port behind a proxy on its configured one:
      // every message to it (from the leader and the other follower) passes the proxy.
      await cluster.kill(follower);
      proxy = new TcpProxy(ip, peerPort, ip, hiddenPeerPort);
      cluster.start(follower, ["--peer-listen", `${ip}:${hiddenPeerPort}`]);
      await waitAllReady();

      proxy.drop();
      const cutAt = Date.now();
      const answer = await cluster.waitFor(
        `${follower} to report 503 while cut off`,
        async () => {
          const ready = await readyz(follower);
          return ready?.status === 503 ? ready : undefined;
        },
        4 * electionTimeoutMs,
      );
      const notReadyAfterMs = Date.now() - cutAt;
      const failing = answer.body.checks?.filter((check) => !check.ok).map((check) => check.name);
      expect(failing?.some((name) => name === "leader_recent" || name === "leader_known")).toBe(
        true,
      );
      // Not before the election timeout: the leader was heard at most a heartbeat (100 ms)
      // before the cut, and a leader heard within the timeout keeps a follower ready.
      expect(notReadyAfterMs).toBeGreaterThanOrEqual(electionTimeoutMs - 200);
      // It stays not ready for as long as the partition lasts; the majority side stays ready.
      await Bun.sleep(electionTimeoutMs);
      expect((await readyz(follower))?.status).toBe(503);
      expect((await readyz(leader, "?role=leader"))?.status).toBe(200);
      expect((await readyz(other))?.status).toBe(200);

      proxy.forward();
      await waitAllReady();
      // Back to the normal listener, without the proxy.
      await cluster.kill(follower);
      proxy.close();
      proxy = undefined;
      cluster.start(follower);
      await waitAllReady();
    },
    60_000,
  );
});

describe("metrics", () => {
  test("/metrics parses and agrees with /status on every node", async () => {
    await cluster.waitForLeader();
    await cluster.putWithRetry(names(), "metrics-key", "v", "e2e-metrics:1");
    await waitAllReady();
    // Every node has written, synced and applied the key, so each has an fsync to count
    // (a node restarted by an earlier test may not have written anything yet).
    for (const name of names()) {
      await cluster.waitFor(`${name} to apply metrics-key`, async () => {
        const url = `${cluster.member(name).url}/v1/kv/metrics-key?consistency=stale`;
        const response = await fetch(url);
        await response.body?.cancel();
        return response.ok ? true : undefined;
      });
    }
    for (const name of names()) {
      const { status, families } = await cluster.waitFor(
        `a /metrics of ${name} taken while its /status stood still`,
        async () => {
          const before = await cluster.status(name);
          const text = await (await fetch(`${cluster.member(name).url}/metrics`)).text();
          const after = await cluster.status(name);
          if (before === undefined || after === undefined) return undefined;
          const same = (["term", "commitIndex", "appliedIndex", "role"] as const).every((key) =>
            before[key] === after[key]
          );
          return same ? { status: after, families: parseExposition(text) } : undefined;
        },
      );
      expectConsistent(name, status, families);
    }
  }, 30_000);
});

function expectConsistent(
  name: string,
  status: StatusBody,
  families: ReturnType<typeof parseExposition>,
): void {
  const where = (what: string): string => `${name}: ${what}`;
  expect([where("term"), sampleValue(families, "keel_term")]).toEqual([where("term"), status.term]);
  expect([where("commit"), sampleValue(families, "keel_commit_index")]).toEqual([
    where("commit"),
    status.commitIndex,
  ]);
  expect([where("applied"), sampleValue(families, "keel_applied_index")]).toEqual([
    where("applied"),
    status.appliedIndex,
  ]);
  const roles = family(families, "keel_role").samples.filter((sample) => sample.value === 1);
  expect(roles.map((sample) => sample.labels.role)).toEqual([status.role]);
  for (
    const counter of ["keel_leader_changes_total", "keel_elections_started_total"]
  ) {
    expect(sampleValue(families, counter)).toBeGreaterThanOrEqual(0);
  }
  expect(sampleValue(families, "keel_process_resident_memory_bytes")).toBeGreaterThan(0);
  const fsync = histogramSeries(family(families, "keel_fsync_seconds"));
  expect(fsync.reduce((total, series) => total + series.count, 0)).toBeGreaterThan(0);
  // The HTTP layer's own metrics: /status was just asked, so it is counted.
  expect(
    sampleValue(families, "keel_http_requests_total", {
      route: "/status",
      method: "GET",
      code: "200",
    }),
  ).toBeGreaterThan(0);
  const requests = family(families, "keel_http_requests_total");
  for (const sample of requests.samples) {
    expect(sample.labels.route).not.toContain("metrics-key");
  }
  if (status.role === "leader") {
    const lags = family(families, "keel_peer_lag_entries").samples;
    expect(lags.map((sample) => sample.labels.peer).sort()).toEqual(
      names().filter((n) => n !== name).sort(),
    );
  }
}

describe("admin", () => {
  test("admin actions need the token: 401 without, 403 with a wrong one", async () => {
    const name = names()[0]!;
    const missing = await admin(name, "/admin/snapshot", null);
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toContain("Bearer");
    const wrong = await admin(name, "/admin/snapshot", "not-the-token");
    expect(wrong.status).toBe(403);
    const right = await admin(name, "/admin/snapshot");
    expect(right.status).toBe(200);
    const body = await right.json() as { ok: boolean; index: number };
    expect(body.ok).toBe(true);
    expect(body.index).toBeGreaterThan(0);
  });

  test(
    "suspend refuses client writes on that node, sent there or forwarded there; resume lets them in",
    async () => {
      const leader = await cluster.waitForLeader();
      const [follower, other] = names().filter((name) => name !== leader) as [string, string];
      /** writes sends a PUT, a DELETE and a CAS through `via`; returns their statuses. */
      const writes = async (via: string, key: string): Promise<number[]> => {
        const base = `${cluster.member(via).url}/v1/kv/${key}`;
        const signal = () => AbortSignal.timeout(10_000);
        const put = await fetch(base, { method: "PUT", body: "v", signal: signal() });
        const del = await fetch(base, { method: "DELETE", signal: signal() });
        const cas = await fetch(`${base}/cas`, {
          method: "POST",
          body: JSON.stringify({ expected: null, value: "w" }),
          signal: signal(),
        });
        for (const response of [put, del, cas]) await response.body?.cancel();
        return [put.status, del.status, cas.status];
      };
      const suspend = (name: string, path: "/admin/suspend" | "/admin/resume") =>
        admin(name, path).then(async (response) => {
          expect(response.status).toBe(200);
          return await response.json() as { suspended: boolean };
        });

      expect((await suspend(leader, "/admin/suspend")).suspended).toBe(true);
      expect(await writes(leader, "suspended-on-leader")).toEqual([503, 503, 503]);
      // Forwarded from a follower that is not suspended, the leader still refuses.
      expect(await writes(other, "suspended-via-follower")).toEqual([503, 503, 503]);
      const refused = await cluster.get(leader, "suspended-on-leader");
      expect(refused.status).toBe(404);
      await suspend(leader, "/admin/resume");
      expect(await writes(other, "resumed-via-follower")).toEqual([200, 200, 200]);

      expect((await suspend(follower, "/admin/suspend")).suspended).toBe(true);
      expect(await writes(follower, "suspended-on-follower")).toEqual([503, 503, 503]);
      expect(await writes(other, "others-still-write")).toEqual([200, 200, 200]);
      await suspend(follower, "/admin/resume");
      expect(await writes(follower, "follower-resumed")).toEqual([200, 200, 200]);
    },
    30_000,
  );

  test("step-down on a follower answers not_leader with the leader's URL", async () => {
    const leader = await cluster.waitForLeader();
    const follower = names().find((name) => name !== leader)!;
    const response = await admin(follower, "/admin/step-down");
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({
      error: { code: "not_leader", leader: { name: leader, url: cluster.member(leader).url } },
    });
  });

  test("step-down moves leadership to another member, a named one with ?to=", async () => {
    const leader = await cluster.waitForLeader();
    const response = await admin(leader, "/admin/step-down");
    expect(response.status).toBe(200);
    const { leader: next } = await response.json() as { leader: string };
    expect(next).not.toBe(leader);
    expect(await cluster.waitForLeader([leader])).toBe(next);

    const target = names().find((name) => name !== next)!;
    const named = await admin(next, `/admin/step-down?to=${target}`);
    expect(named.status).toBe(200);
    expect(await named.json()).toEqual({ ok: true, leader: target });
    expect(await cluster.waitForLeader()).toBe(target);
    await waitAllReady();
    expect(await leadersByReadyz()).toEqual([target]);
  }, 30_000);

  test("shutdown of the leader hands over leadership, then the process exits 0", async () => {
    const leader = await cluster.waitForLeader();
    const before = (await cluster.status(leader))!;
    const member = cluster.member(leader);
    const child = member.process!;
    const logFrom = member.log.length;
    const response = await admin(leader, "/admin/shutdown");
    expect(response.status).toBe(202);
    const exitCode = await Promise.race([
      child.exited,
      Bun.sleep(15_000).then(() => "still running"),
    ]);
    expect(exitCode).toBe(0);
    member.process = undefined;
    const survivors = names().filter((name) => name !== leader);
    const successor = await cluster.waitFor("a successor on the survivors", async () => {
      const statuses = await Promise.all(survivors.map((name) => cluster.status(name)));
      return statuses.find((s) => s?.role === "leader" && s.term > before.term)?.name;
    }, 5000);
    // The survivors elect fast when a leader's connections drop, so timing proves nothing
    // here. The old leader's own log does: it followed the successor, then stopped.
    await Bun.sleep(100); // The rest of its stderr.
    const records = member.log.slice(logFrom).flatMap((line) => {
      try {
        return [JSON.parse(line) as { msg?: string; leader?: string; term?: number }];
      } catch {
        return [];
      }
    });
    const followed = records.findIndex((record) =>
      record.leader === successor && (record.term ?? 0) > before.term
    );
    const stopping = records.findIndex((record) => record.msg === "stopping");
    expect({ followed: followed >= 0, stopping: stopping >= 0 }).toEqual({
      followed: true,
      stopping: true,
    });
    expect(followed).toBeLessThan(stopping);
  }, 30_000);
});

/**
 * TcpProxy forwards connections from one endpoint to another, byte for byte, and can be
 * switched to drop them: then every connection is closed at once, new ones included.
 */
class TcpProxy {
  #dropping = false;
  readonly #pairs = new Set<ProxyPair>();
  readonly #listener: TCPSocketListener<ProxyPair>;

  constructor(host: string, port: number, targetHost: string, targetPort: number) {
    const pairs = this.#pairs;
    const isDropping = (): boolean => this.#dropping;
    this.#listener = Bun.listen<ProxyPair>({
      hostname: host,
      port,
      socket: {
        open(client) {
          if (isDropping()) {
            client.terminate();
            return;
          }
          const pair = new ProxyPair(client);
          client.data = pair;
          pairs.add(pair);
          Bun.connect<ProxyPair>({
            hostname: targetHost,
            port: targetPort,
            data: pair,
            socket: {
              open(upstream) {
                pair.attach(upstream);
              },
              data(_upstream, chunk) {
                pair.toClient.write(chunk);
              },
              drain() {
                pair.toUpstream.flush();
              },
              close() {
                pair.close();
                pairs.delete(pair);
              },
              error() {
                pair.close();
                pairs.delete(pair);
              },
            },
          }).catch(() => {
            pair.close();
            pairs.delete(pair);
          });
        },
        data(client, chunk) {
          client.data?.toUpstream.write(chunk);
        },
        drain(client) {
          client.data?.toClient.flush();
        },
        close(client) {
          client.data?.close();
          if (client.data !== undefined) pairs.delete(client.data);
        },
        error(client) {
          client.data?.close();
        },
      },
    });
  }

  /** drop closes every connection now and refuses new ones until forward(). */
  drop(): void {
    this.#dropping = true;
    for (const pair of this.#pairs) pair.close();
    this.#pairs.clear();
  }

  forward(): void {
    this.#dropping = false;
  }

  close(): void {
    this.drop();
    this.#listener.stop(true);
  }
}

/** ProxyPair is one proxied connection: the client's socket and the upstream one. */
class ProxyPair {
  readonly toClient: Pipe;
  readonly toUpstream: Pipe;
  #upstream: Socket<ProxyPair> | undefined;
  #closed = false;

  constructor(readonly client: Socket<ProxyPair>) {
    this.toClient = new Pipe(() => client);
    this.toUpstream = new Pipe(() => this.#upstream);
  }

  attach(upstream: Socket<ProxyPair>): void {
    if (this.#closed) {
      upstream.terminate();
      return;
    }
    this.#upstream = upstream;
    this.toUpstream.flush();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.client.terminate();
    this.#upstream?.terminate();
  }
}

/** Pipe writes to a socket in order, keeping what it could not take until it drains. */
class Pipe {
  #queue: Uint8Array[] = [];

  constructor(readonly socket: () => Socket<ProxyPair> | undefined) {}

  write(chunk: Uint8Array): void {
    this.#queue.push(new Uint8Array(chunk));
    this.flush();
  }

  flush(): void {
    const socket = this.socket();
    if (socket === undefined) return;
    while (this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const written = socket.write(head);
      if (written < head.length) {
        this.#queue[0] = head.subarray(Math.max(written, 0));
        return;
      }
      this.#queue.shift();
    }
  }
}
