import { describe, expect, test } from "bun:test";
import type { Fields, Logger } from "../../src/lib/log.ts";
import { Registry } from "../../src/lib/metrics.ts";
import {
  GossipAgent,
  type GossipAgentOptions,
  type GossipEndpoint,
  pendingPeerAddress,
  registerGossipMetrics,
} from "../../src/resolver/gossip.ts";
import {
  decodeGossip,
  encodeGossip,
  formatGossipEndpoint,
  type GossipClaim,
  gossipMessageBytesMax,
} from "../../src/resolver/gossip_wire.ts";
import { FakeTime } from "./fake_time.ts";

// The name scheme's gossip on a fake clock over an in-memory network: no sockets, no
// sleeping. Each node is an agent at 127.0.0.x:7071; datagrams take 1 ms.

interface LogLine {
  level: string;
  message: string;
  fields: Fields;
}

function recordingLogger(lines: LogLine[]): Logger {
  const logger: Logger = {
    debug: (message, fields = {}) => lines.push({ level: "debug", message, fields }),
    info: (message, fields = {}) => lines.push({ level: "info", message, fields }),
    warn: (message, fields = {}) => lines.push({ level: "warn", message, fields }),
    error: (message, fields = {}) => lines.push({ level: "error", message, fields }),
    child: () => logger,
  };
  return logger;
}

const names = ["node-a", "node-b", "node-c"];
const secret = new TextEncoder().encode("cluster-secret");
const gossipPort = 7071;

interface Datagram {
  from: string;
  to: string;
  bytes: Uint8Array;
}

interface TestNode {
  name: string;
  ip: string;
  incarnation: string;
  agent: GossipAgent;
  /** onChange calls: member -> every peer address applied, in order. */
  applied: Map<string, string[]>;
  log: LogLine[];
  state: { recovering: boolean; fenced: boolean };
}

interface NodeOptions {
  incarnation?: string;
  bootstrap?: GossipEndpoint[];
  secret?: Uint8Array | undefined;
  checkClaim?: GossipAgentOptions["checkClaim"];
  members?: Array<{ name: string; gossipAddressed: boolean }>;
}

/** Net is an in-memory datagram network between agents, with partitions. */
class Net {
  readonly time = new FakeTime();
  readonly agents = new Map<string, TestNode>(); // "ip:port" -> node
  readonly blocked = new Set<string>(); // "ipA ipB", both directions
  readonly log: Datagram[] = [];

  add(name: string, ip: string, options: NodeOptions = {}): TestNode {
    const key = `${ip}:${gossipPort}`;
    const log: LogLine[] = [];
    const applied = new Map<string, string[]>();
    const state = { recovering: false, fenced: false };
    const incarnation = options.incarnation ?? `${name}-1`;
    const agent = new GossipAgent({
      clusterName: "test",
      self: {
        name,
        incarnation,
        peer: { host: ip, port: 7070 },
        http: { host: ip, port: 7080 },
        gossip: { host: ip, port: gossipPort },
      },
      members: options.members ?? names.map((n) => ({ name: n, gossipAddressed: true })),
      bootstrap: () => options.bootstrap ?? [{ host: "127.0.0.101", port: gossipPort }],
      intervalMs: 1000,
      fullIntervalMs: 5000,
      expiryMs: 15_000,
      secret: "secret" in options ? options.secret : secret,
      clock: this.time,
      scheduler: this.time,
      network: { send: (bytes, host, port) => this.send(key, bytes, `${host}:${port}`) },
      selfState: () => state,
      ...(options.checkClaim === undefined ? {} : { checkClaim: options.checkClaim }),
      onChange: (member, peer) => {
        const list = applied.get(member) ?? [];
        list.push(formatGossipEndpoint(peer));
        applied.set(member, list);
      },
      log: recordingLogger(log),
    });
    const node = { name, ip, incarnation, agent, applied, log, state };
    this.agents.set(key, node);
    return node;
  }

  /** kill stops a node's agent and takes it off the network (kill -9). */
  kill(node: TestNode): void {
    node.agent.stop();
    this.agents.delete(`${node.ip}:${gossipPort}`);
  }

  block(a: TestNode, b: TestNode): void {
    this.blocked.add(`${a.ip} ${b.ip}`);
    this.blocked.add(`${b.ip} ${a.ip}`);
  }

  heal(): void {
    this.blocked.clear();
  }

  send(from: string, bytes: Uint8Array, to: string): void {
    this.log.push({ from, to, bytes });
    const fromIp = from.split(":")[0]!;
    const toIp = to.split(":")[0]!;
    if (this.blocked.has(`${fromIp} ${toIp}`)) return;
    this.time.setTimeout(() => {
      this.agents.get(to)?.agent.receive(bytes, fromIp, gossipPort);
    }, 1);
  }

  /** inject delivers raw bytes to a node as if sent from ip. */
  inject(node: TestNode, bytes: Uint8Array, fromIp = "127.0.0.199"): void {
    node.agent.receive(bytes, fromIp, gossipPort);
  }
}

function peerOf(node: TestNode, member: string): string | null {
  const address = node.agent.peerAddress(member);
  return address === null ? null : formatGossipEndpoint(address);
}

function view(node: TestNode, member: string) {
  return node.agent.state().find((entry) => entry.name === member)!;
}

function claim(overrides: Partial<GossipClaim> & { name: string }): GossipClaim {
  const ip = overrides.peer?.host ?? "127.0.0.150";
  return {
    incarnation: `${overrides.name}-x`,
    recovering: false,
    seq: 1,
    peer: { host: ip, port: 7070 },
    http: { host: ip, port: 7080 },
    gossip: { host: ip, port: gossipPort },
    ...overrides,
  };
}

function datagram(
  from: string,
  entries: GossipClaim[],
  options: { cluster?: string; key?: Uint8Array | undefined; pull?: boolean } = {},
): Uint8Array {
  return encodeGossip(
    { cluster: options.cluster ?? "test", from, pull: options.pull ?? false, entries },
    "key" in options ? options.key : secret,
  );
}

/** threeNodes starts node-a (the bootstrap neighbour), node-b and node-c and lets them settle. */
async function threeNodes(net: Net, settleMs = 3000): Promise<[TestNode, TestNode, TestNode]> {
  const a = net.add("node-a", "127.0.0.101");
  const b = net.add("node-b", "127.0.0.102");
  const c = net.add("node-c", "127.0.0.103");
  for (const node of [a, b, c]) node.agent.start();
  await net.time.advance(settleMs);
  return [a, b, c];
}

describe("propagation", () => {
  test("every node learns every member's addresses through one bootstrap neighbour", async () => {
    const net = new Net();
    const [a, b, c] = await threeNodes(net, 1500);
    for (const node of [a, b, c]) {
      for (const other of [a, b, c]) {
        if (other === node) continue;
        expect(peerOf(node, other.name)).toBe(`${other.ip}:7070`);
        expect(node.agent.httpAddress(other.name)).toEqual({ host: other.ip, port: 7080 });
        expect(node.applied.get(other.name)).toEqual([`${other.ip}:7070`]);
      }
    }
    // b and c learned each other from a's tables, then heard each other first-hand.
    expect(view(b, "node-c").learnedFrom).toBe("node-c");
    expect(view(b, "node-c").changes).toBe(0);
    expect(a.agent.neighbours().map(formatGossipEndpoint).sort()).toEqual([
      "127.0.0.102:7071",
      "127.0.0.103:7071",
    ]);
  });

  test("a claim reaches a node that cannot hear its owner, relayed by a third", async () => {
    const net = new Net();
    const a = net.add("node-a", "127.0.0.101");
    const b = net.add("node-b", "127.0.0.102");
    const c = net.add("node-c", "127.0.0.103");
    net.block(b, c);
    for (const node of [a, b, c]) node.agent.start();
    await net.time.advance(2000);
    expect(peerOf(b, "node-c")).toBe("127.0.0.103:7070");
    expect(view(b, "node-c").learnedFrom).toBe("node-a");
    // Relayed heartbeats (whole tables every full interval) keep it from expiring.
    await net.time.advance(60_000);
    expect(view(b, "node-c").expired).toBe(false);
    expect(view(b, "node-c").version).toBeGreaterThan(50);
  });

  test("the first rounds pull whole tables, later rounds send only recent changes", async () => {
    const net = new Net();
    // Rounds at 0, 1 s, 2 s...; whole tables at 0, 5 s, 10 s, 15 s: the one at 18 s is not.
    await threeNodes(net, 18_000);
    const decoded = net.log.slice(-6).map((d) => decodeGossip(d.bytes, secret));
    for (const result of decoded) {
      if (!result.ok) throw new Error(result.detail);
      expect(result.message.pull).toBe(false);
    }
    // In a steady state (no change for 3 rounds) an ordinary round carries the sender only.
    const counts = decoded.map((r) => r.ok ? r.message.entries.length : -1);
    expect(counts).toEqual([1, 1, 1, 1, 1, 1]);
    const first = net.log.slice(0, 2).map((d) => decodeGossip(d.bytes, secret));
    expect(first.every((r) => r.ok && r.message.pull)).toBe(true);
  });
});

describe("expiry", () => {
  test("an entry not refreshed expires: not gossiped, not a neighbour, address kept", async () => {
    const net = new Net();
    const [a, b, c] = await threeNodes(net);
    net.kill(c);
    await net.time.advance(14_000);
    expect(view(a, "node-c").expired).toBe(false);
    await net.time.advance(3000);
    expect(view(a, "node-c").expired).toBe(true);
    expect(view(b, "node-c").expired).toBe(true);
    // The transport keeps dialling the last known address.
    expect(peerOf(a, "node-c")).toBe("127.0.0.103:7070");
    expect(a.agent.neighbours().map(formatGossipEndpoint)).toEqual(["127.0.0.102:7071"]);
    // No datagram sent after expiry carries node-c's claim, and none goes to its address.
    const mark = net.log.length;
    await net.time.advance(10_000);
    const later = net.log.slice(mark);
    expect(later.some((d) => d.to === "127.0.0.103:7071")).toBe(false);
    for (const d of later) {
      const result = decodeGossip(d.bytes, secret);
      if (!result.ok) throw new Error(result.detail);
      expect(result.message.entries.map((e) => e.name)).not.toContain("node-c");
    }
  });

  test("an expired member that comes back is refreshed", async () => {
    const net = new Net();
    const [a, , c] = await threeNodes(net);
    net.kill(c);
    await net.time.advance(20_000);
    expect(view(a, "node-c").expired).toBe(true);
    const back = net.add("node-c", "127.0.0.103"); // a process restart: same incarnation
    back.agent.start();
    await net.time.advance(3000);
    expect(view(a, "node-c").expired).toBe(false);
    expect(a.applied.get("node-c")).toEqual(["127.0.0.103:7070"]);
  });
});

describe("conflicts", () => {
  test("a node never accepts a claim for its own name, and refutes it", async () => {
    const net = new Net();
    const [a, b] = await threeNodes(net);
    const forged = claim({ name: "node-a", peer: { host: "127.0.0.150", port: 7070 }, seq: 500 });
    // b takes the forged claim (it is newer than what b holds of node-a)...
    net.inject(b, datagram("node-c", [forged]));
    expect(peerOf(b, "node-a")).toBe("127.0.0.150:7070");
    // ...but a never does, and its refutation outranks the forgery everywhere at once.
    net.inject(a, datagram("node-c", [forged]));
    expect(peerOf(a, "node-a")).toBe("127.0.0.101:7070");
    expect(a.agent.counters().rejected["own-name"]).toBe(1);
    expect(a.agent.counters().refutations).toBe(1);
    expect(a.agent.version).toBe(501);
    await net.time.advance(10);
    expect(peerOf(b, "node-a")).toBe("127.0.0.101:7070");
    expect(b.applied.get("node-a")).toEqual([
      "127.0.0.101:7070",
      "127.0.0.150:7070",
      "127.0.0.101:7070",
    ]);
  });

  test("a replacement from a new address is adopted within seconds", async () => {
    const net = new Net();
    const [a, b, c] = await threeNodes(net, 30_000);
    const oldVersion = view(a, "node-b").version!;
    expect(oldVersion).toBeGreaterThan(25);
    net.kill(b); // kill -9; the data dir is wiped: a new incarnation, counting from 0
    await net.time.advance(2000);
    const replacement = net.add("node-b", "127.0.0.105", { incarnation: "node-b-2" });
    replacement.state.recovering = true;
    replacement.agent.start();
    await net.time.advance(100);
    for (const node of [a, c]) {
      expect(peerOf(node, "node-b")).toBe("127.0.0.105:7070");
      expect(view(node, "node-b").incarnation).toBe("node-b-2");
      expect(view(node, "node-b").recovering).toBe(true);
      expect(view(node, "node-b").changes).toBe(1);
      expect(node.applied.get("node-b")).toEqual(["127.0.0.102:7070", "127.0.0.105:7070"]);
    }
    // It heard the old claim for its name and jumped past it (rule 1).
    expect(replacement.agent.version).toBeGreaterThan(oldVersion);
    expect(replacement.agent.counters().refutations).toBeGreaterThanOrEqual(1);
    expect(peerOf(replacement, "node-a")).toBe("127.0.0.101:7070");
    expect(peerOf(replacement, "node-c")).toBe("127.0.0.103:7070");
  });

  test("stale copies of the old address never win back", async () => {
    const net = new Net();
    const [a, b, c] = await threeNodes(net, 30_000);
    // Keep every datagram old node-b sent, to replay later.
    const oldDatagrams = net.log.filter((d) => d.from === "127.0.0.102:7071").map((d) => d.bytes);
    // node-c is cut off while node-b is replaced: it keeps the old claim in its table.
    net.block(c, a);
    net.kill(b);
    const replacement = net.add("node-b", "127.0.0.105", { incarnation: "node-b-2" });
    replacement.agent.start();
    net.block(c, replacement);
    await net.time.advance(3000);
    expect(peerOf(a, "node-b")).toBe("127.0.0.105:7070");
    expect(peerOf(c, "node-b")).toBe("127.0.0.102:7070");
    // node-c comes back and sends its whole table, old node-b included; replays arrive too.
    net.heal();
    for (const bytes of oldDatagrams) net.inject(a, bytes, "127.0.0.102");
    await net.time.advance(12_000);
    for (const node of [a, c, replacement]) {
      if (node !== replacement) expect(peerOf(node, "node-b")).toBe("127.0.0.105:7070");
    }
    expect(a.applied.get("node-b")).toEqual(["127.0.0.102:7070", "127.0.0.105:7070"]);
    expect(c.applied.get("node-b")).toEqual(["127.0.0.102:7070", "127.0.0.105:7070"]);
    expect(a.agent.counters().rejected.stale).toBeGreaterThan(0);
    expect(view(a, "node-b").refused).toBeGreaterThan(0);
  });

  test("an incarnation the fence table refuses never takes its name back", async () => {
    const net = new Net();
    // The Raft incarnation table, as every node sees it once node-b-2's fence commits.
    const fenced = new Set<string>();
    const checkClaim = (_name: string, incarnation: string) =>
      fenced.has(incarnation) ? `incarnation ${incarnation} was replaced` : null;
    const a = net.add("node-a", "127.0.0.101", { checkClaim });
    const b = net.add("node-b", "127.0.0.102", { checkClaim });
    const c = net.add("node-c", "127.0.0.103", { checkClaim });
    for (const node of [a, b, c]) node.agent.start();
    await net.time.advance(5000);
    net.kill(b);
    const replacement = net.add("node-b", "127.0.0.105", { incarnation: "node-b-2", checkClaim });
    replacement.agent.start();
    await net.time.advance(2000);
    fenced.add("node-b-1");
    // The zombie returns with its old disk and address, and out-counts everyone.
    const zombie = net.add("node-b", "127.0.0.102", { checkClaim });
    zombie.agent.start();
    net.inject(
      a,
      datagram("node-b", [claim({ name: "node-b", incarnation: "node-b-1", seq: 1e9 })]),
    );
    await net.time.advance(10_000);
    expect(peerOf(a, "node-b")).toBe("127.0.0.105:7070");
    expect(peerOf(c, "node-b")).toBe("127.0.0.105:7070");
    expect(a.agent.counters().rejected.fenced).toBeGreaterThan(0);
    // Hearing both hosts speak in turn, node-a says that two live hosts claim one name.
    expect(
      a.log.some((line) =>
        line.level === "error" && line.message === "two live hosts claim one member name"
      ),
    ).toBe(true);
    expect(a.agent.counters().conflicts).toBeGreaterThan(0);
  });

  test("two live hosts with one name refute each other at a bounded rate, and say so", async () => {
    const net = new Net();
    const one = net.add("node-b", "127.0.0.102", {
      incarnation: "twin-1",
      bootstrap: [{ host: "127.0.0.112", port: gossipPort }],
    });
    const two = net.add("node-b", "127.0.0.112", {
      incarnation: "twin-2",
      bootstrap: [{ host: "127.0.0.102", port: gossipPort }],
    });
    one.agent.start();
    two.agent.start();
    await net.time.advance(10_000);
    // Each sends a round a second plus at most two pushes a second.
    expect(net.log.length).toBeLessThan(80);
    expect(one.agent.counters().refutations).toBeGreaterThan(3);
    for (const twin of [one, two]) {
      const errors = twin.log.filter((line) =>
        line.level === "error" && line.message === "another live host claims this node's name"
      );
      expect(errors.length).toBe(1); // logged once per expiry, counted every time
      expect(twin.agent.counters().conflicts).toBeGreaterThan(3);
    }
  });

  test("a held claim that the fence table refuses loses to any other", async () => {
    const net = new Net();
    const fenced = new Set<string>();
    const a = net.add("node-a", "127.0.0.101", {
      checkClaim: (_name, incarnation) => fenced.has(incarnation) ? "replaced" : null,
    });
    a.agent.start();
    net.inject(a, datagram("node-b", [claim({ name: "node-b", incarnation: "old", seq: 900 })]));
    fenced.add("old");
    const fresh = claim({
      name: "node-b",
      incarnation: "new",
      seq: 3,
      peer: { host: "127.0.0.105", port: 7070 },
    });
    net.inject(a, datagram("node-b", [fresh]));
    expect(peerOf(a, "node-b")).toBe("127.0.0.105:7070");
  });

  test("equal versions with different content settle the same way on every node", () => {
    const net = new Net();
    const a = net.add("node-a", "127.0.0.101");
    const c = net.add("node-c", "127.0.0.103");
    const one = claim({ name: "node-b", incarnation: "inc-1", seq: 7 });
    const two = claim({
      name: "node-b",
      incarnation: "inc-2",
      seq: 7,
      peer: { host: "127.0.0.106", port: 7070 },
    });
    net.inject(a, datagram("node-a", [one]));
    net.inject(a, datagram("node-a", [two]));
    net.inject(c, datagram("node-a", [two]));
    net.inject(c, datagram("node-a", [one]));
    expect(view(a, "node-b").incarnation).toBe(view(c, "node-b").incarnation);
    expect(a.agent.counters().conflicts).toBe(1);
  });

  test("a fenced node stops gossiping", async () => {
    const net = new Net();
    const [a] = await threeNodes(net);
    a.state.fenced = true;
    const mark = net.log.length;
    await net.time.advance(5000);
    expect(net.log.slice(mark).some((d) => d.from === "127.0.0.101:7071")).toBe(false);
    expect(a.log.some((line) => line.message === "this node is fenced: it no longer gossips"))
      .toBe(true);
  });
});

describe("bounds and authentication", () => {
  test("garbage, oversize, unsigned, wrongly signed and foreign datagrams are refused", async () => {
    const net = new Net();
    const [a] = await threeNodes(net);
    const before = a.agent.state();
    const evil = claim({ name: "node-b", seq: 1e6, peer: { host: "127.0.0.66", port: 7070 } });
    net.inject(a, new Uint8Array([1, 2, 3]));
    net.inject(a, crypto.getRandomValues(new Uint8Array(600)));
    net.inject(a, new Uint8Array(gossipMessageBytesMax + 1));
    net.inject(a, datagram("node-b", [evil], { key: undefined }));
    net.inject(a, datagram("node-b", [evil], { key: new TextEncoder().encode("wrong") }));
    net.inject(a, datagram("node-b", [evil], { cluster: "other" }));
    net.inject(a, datagram("node-z", [evil]));
    net.inject(a, datagram("node-b", [claim({ name: "node-z" })]));
    // A valid datagram with one bit flipped in its body.
    const tampered = datagram("node-b", [evil]);
    tampered[tampered.length - 5] = tampered[tampered.length - 5]! ^ 1;
    net.inject(a, tampered);
    const rejected = a.agent.counters().rejected;
    expect(rejected.malformed).toBe(2);
    expect(rejected.oversize).toBe(1);
    expect(rejected.unsigned).toBe(1);
    expect(rejected["bad-signature"]).toBe(2);
    expect(rejected["wrong-cluster"]).toBe(1);
    expect(rejected["unknown-member"]).toBe(2);
    expect(peerOf(a, "node-b")).toBe("127.0.0.102:7070");
    expect(a.agent.state().map((v) => v.peer)).toEqual(before.map((v) => v.peer));
    expect(a.log.some((line) => line.level === "warn" && line.fields.reason === "unsigned"))
      .toBe(true);
  });

  test("dev mode accepts unsigned gossip, says so once, and refuses signed gossip", async () => {
    const net = new Net();
    const a = net.add("node-a", "127.0.0.101", { secret: undefined });
    const b = net.add("node-b", "127.0.0.102", { secret: undefined });
    a.agent.start();
    b.agent.start();
    await net.time.advance(5000);
    expect(peerOf(a, "node-b")).toBe("127.0.0.102:7070");
    const devLines = a.log.filter((line) => line.message.startsWith("dev mode:"));
    expect(devLines.length).toBe(1);
    net.inject(a, datagram("node-c", [claim({ name: "node-c" })]));
    expect(a.agent.counters().rejected["signed-without-secret"]).toBe(1);
    expect(peerOf(a, "node-c")).toBeNull();
  });

  test("claims only for configured members: the table never grows past them", async () => {
    const net = new Net();
    const [a] = await threeNodes(net);
    for (let i = 0; i < 100; i++) {
      net.inject(a, datagram("node-b", [claim({ name: `intruder-${i}` })]));
    }
    expect(a.agent.state().map((v) => v.name)).toEqual(names);
    expect(a.agent.counters().rejected["unknown-member"]).toBe(100);
  });

  test("a node's neighbours are bounded and exclude itself", () => {
    const net = new Net();
    const bootstrap = Array.from({ length: 60 }, (_, i) => ({ host: `10.0.0.${i}`, port: 7071 }));
    bootstrap.push({ host: "127.0.0.101", port: gossipPort });
    const a = net.add("node-a", "127.0.0.101", { bootstrap });
    expect(a.agent.neighbours().length).toBe(32);
    expect(a.agent.neighbours().map(formatGossipEndpoint)).not.toContain("127.0.0.101:7071");
  });

  test("a member with configured endpoints is gossiped about but its address is not applied", async () => {
    const net = new Net();
    const members = [
      { name: "node-a", gossipAddressed: false },
      { name: "node-b", gossipAddressed: true },
      { name: "node-c", gossipAddressed: true },
    ];
    const a = net.add("node-a", "127.0.0.101", { members });
    const b = net.add("node-b", "127.0.0.102", { members });
    a.agent.start();
    b.agent.start();
    await net.time.advance(2000);
    expect(peerOf(b, "node-a")).toBe("127.0.0.101:7070");
    expect(b.applied.has("node-a")).toBe(false);
    expect(a.applied.get("node-b")).toEqual(["127.0.0.102:7070"]);
  });

  test("metrics show counters and per-member ages", async () => {
    const net = new Net();
    const [a] = await threeNodes(net);
    const registry = new Registry();
    registerGossipMetrics(registry, a.agent);
    const text = registry.render();
    expect(text).toContain('keel_gossip_rejected_total{reason="stale"} 0');
    // Every *_total is a counter (promtool check metrics refuses a gauge named so).
    const types = [...text.matchAll(/^# TYPE (keel_gossip_\w+) (\w+)$/gm)];
    expect(types.length).toBeGreaterThan(5);
    for (const [, name, type] of types) {
      expect(`${name} ${type}`).toBe(`${name} ${name!.endsWith("_total") ? "counter" : "gauge"}`);
    }
    expect(text).toMatch(/keel_gossip_messages_received_total \d+/);
    expect(text).toContain('keel_gossip_entry_expired{member="node-b"} 0');
    expect(text).toMatch(/keel_gossip_entry_age_seconds\{member="node-c"\} [0-9.]+/);
  });

  test("a gossip-addressed peer waits at an address that never resolves", () => {
    const address = pendingPeerAddress("Node-B");
    expect(address.host).toBe("node-b.gossip-pending.invalid");
    expect(address.host.endsWith(".invalid")).toBe(true);
  });
});
