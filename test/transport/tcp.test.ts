import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import type { Message, NodeId } from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";
import { encodeHelloFrame, encodeMessagesFrame } from "../../src/transport/codec.ts";
import { protocolVersion } from "../../src/transport/handshake.ts";
import { helloTimeoutMs, outboundQueueMessagesMax } from "../../src/transport/limits.ts";
import {
  backoffMs,
  type LogLevel,
  TcpTransport,
  type TcpTransportOptions,
} from "../../src/transport/tcp.ts";

// Real sockets on loopback addresses 127.0.0.41-49, ports 17100-17999; every test uses
// its own ports and closes what it opened.

interface LogLine {
  level: LogLevel;
  message: string;
  fields: Record<string, unknown>;
}

interface TestNode {
  name: NodeId;
  transport: TcpTransport;
  received: Message[];
  logs: LogLine[];
  peersDown: NodeId[];
}

type Cluster = Record<NodeId, { host: string; port: number }>;

const fingerprintFields = { clusterName: "c1", members: "m1", "raft.electionTimeoutMs": "e1" };

const opened: TcpTransport[] = [];
const rawSockets: Socket<undefined>[] = [];

afterEach(async () => {
  for (const socket of rawSockets.splice(0)) socket.end();
  await Promise.all(opened.splice(0).map((transport) => transport.close()));
});

function makeNode(
  name: NodeId,
  cluster: Cluster,
  overrides: Partial<TcpTransportOptions> & { incarnation?: string } = {},
): TestNode {
  const self = cluster[name];
  if (self === undefined) throw new Error(`no address for ${name}`);
  const logs: LogLine[] = [];
  const prng = new Prng(name.length * 7919 + self.port);
  const transport = new TcpTransport({
    self: { name, incarnation: overrides.incarnation ?? `${name}-1` },
    listen: self,
    peers: Object.entries(cluster)
      .filter(([peer]) => peer !== name)
      .map(([peer, address]) => ({ name: peer, ...address })),
    clusterName: "test",
    fingerprint: "fp-1",
    fingerprintFields,
    log: (level, message, fields) => logs.push({ level, message, fields }),
    random: () => prng.next(),
    ...overrides,
  });
  opened.push(transport);
  const node: TestNode = { name, transport, received: [], logs, peersDown: [] };
  transport.onMessage((message) => node.received.push(message));
  transport.onPeerDown((peer) => node.peersDown.push(peer));
  return node;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await Bun.sleep(5);
  }
}

function heartbeat(from: NodeId, to: NodeId, context: number): Message {
  return { type: "heartbeat", term: 1, from, to, commitIndex: 0, context };
}

function contexts(messages: readonly Message[]): number[] {
  return messages.map((message) => (message.type === "heartbeat" ? message.context : -1));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function connected(node: TestNode, peer: NodeId): boolean {
  return node.transport.links().find((link) => link.name === peer)?.connected === true;
}

/** rawConnect opens a bare socket to a transport's port; closed resolves when it closes. */
async function rawConnect(
  host: string,
  port: number,
): Promise<
  { socket: Socket<undefined>; local: string; closed: Promise<void>; received: number[] }
> {
  const received: number[] = [];
  let onClose = () => {};
  const closed = new Promise<void>((resolve) => (onClose = resolve));
  const socket = await Bun.connect({
    hostname: host,
    port,
    socket: {
      binaryType: "uint8array",
      data: (_socket, chunk) => {
        received.push(...chunk);
      },
      close: () => onClose(),
    },
  });
  rawSockets.push(socket);
  // Read now: a closed socket no longer knows its address.
  const local = `${socket.localAddress}:${socket.localPort}`;
  return { socket, local, closed, received };
}

function loggedAbout(node: TestNode, remote: string): boolean {
  return node.logs.some((line) => line.fields["remoteAddress"] === remote);
}

function warnedAbout(node: TestNode, remote: string): boolean {
  return node.logs.some((line) => line.level === "warn" && line.fields["remoteAddress"] === remote);
}

describe("TcpTransport", () => {
  test("two transports exchange messages both ways, in send order", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17101 },
      b: { host: "127.0.0.42", port: 17102 },
    };
    const a = makeNode("a", cluster);
    const b = makeNode("b", cluster);
    await a.transport.start();
    await b.transport.start();
    // Sent before the links are up: they wait in the queues.
    for (let i = 1; i <= 3000; i++) {
      a.transport.send(heartbeat("a", "b", i));
      b.transport.send(heartbeat("b", "a", i));
    }
    await waitFor(() => b.received.length === 3000 && a.received.length === 3000, "3000 each way");
    expect(contexts(b.received)).toEqual(range(1, 3000));
    expect(contexts(a.received)).toEqual(range(1, 3000));
    expect(a.transport.links()).toEqual([{
      name: "b",
      address: "127.0.0.42:17102",
      connected: true,
      incarnation: "b-1",
      lastError: null,
      queuedMessages: 0,
      droppedMessages: 0,
      protocolVersion,
    }]);
  });

  test("large messages go through socket backpressure intact and in order", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17111 },
      b: { host: "127.0.0.42", port: 17112 },
    };
    const a = makeNode("a", cluster);
    const b = makeNode("b", cluster);
    await Promise.all([a.transport.start(), b.transport.start()]);
    await waitFor(() => connected(a, "b"), "a -> b link");
    const count = 300;
    for (let i = 1; i <= count; i++) {
      // The last one is bigger than a batch: it goes alone in its frame.
      const data = new Uint8Array(i === count ? 3 * 1024 * 1024 : 100 * 1024).fill(i & 0xff);
      a.transport.send({
        type: "appendEntries",
        term: 2,
        from: "a",
        to: "b",
        prevLogIndex: i - 1,
        prevLogTerm: 2,
        entries: [{ index: i, term: 2, kind: "command", data }],
        commitIndex: 0,
      });
    }
    await waitFor(() => b.received.length === count, `${count} appendEntries`, 20_000);
    b.received.forEach((message, i) => {
      if (message.type !== "appendEntries") throw new Error(`unexpected ${message.type}`);
      const entry = message.entries[0];
      expect(entry?.index).toBe(i + 1);
      expect(entry?.data.byteLength).toBe(i + 1 === count ? 3 * 1024 * 1024 : 100 * 1024);
      expect(entry?.data.every((byte) => byte === ((i + 1) & 0xff))).toBe(true);
    });
  });

  test("three transports all reach each other", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17121 },
      b: { host: "127.0.0.42", port: 17122 },
      c: { host: "127.0.0.43", port: 17123 },
    };
    const nodes = ["a", "b", "c"].map((name) => makeNode(name, cluster));
    await Promise.all(nodes.map((node) => node.transport.start()));
    for (const from of nodes) {
      for (const to of nodes) {
        if (from !== to) {
          for (let i = 1; i <= 50; i++) from.transport.send(heartbeat(from.name, to.name, i));
        }
      }
    }
    await waitFor(() => nodes.every((node) => node.received.length === 100), "50 from each peer");
    for (const node of nodes) {
      for (const peer of nodes) {
        if (peer === node) continue;
        expect(contexts(node.received.filter((m) => m.from === peer.name))).toEqual(range(1, 50));
      }
      expect(node.transport.links().map((link) => link.connected)).toEqual([true, true]);
    }
  });

  test("a fingerprint mismatch is refused and both sides log the differing fields", async () => {
    const cluster = {
      a: { host: "127.0.0.44", port: 17131 },
      b: { host: "127.0.0.45", port: 17132 },
    };
    const a = makeNode("a", cluster);
    const b = makeNode("b", cluster, {
      fingerprint: "fp-2",
      fingerprintFields: {
        clusterName: "c1",
        members: "m1",
        "raft.electionTimeoutMs": "e2",
        "resolver.servers": "s1",
      },
    });
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    const expected = ["raft.electionTimeoutMs", "resolver.servers"];
    const logsFields = (node: TestNode, text: string) =>
      node.logs.some((line) =>
        line.level === "warn" && line.message.includes(text) &&
        line.message.includes("raft.electionTimeoutMs, resolver.servers") &&
        JSON.stringify(line.fields["differingFields"]) === JSON.stringify(expected)
      );
    for (const node of [a, b]) {
      const peer = node === a ? "b" : "a";
      // The accepting side, refusing the other's Hello:
      await waitFor(
        () => logsFields(node, `Refused the handshake of "${peer}"`),
        `${node.name} refusing`,
      );
      // The dialling side, told why:
      await waitFor(
        () => logsFields(node, `Peer "${peer}" refused our handshake`),
        `${node.name} refused`,
      );
    }
    const [link] = a.transport.links();
    expect(link?.connected).toBe(false);
    expect(link?.lastError).toContain("raft.electionTimeoutMs, resolver.servers");
    expect(b.received).toEqual([]);
  });

  test("garbage and oversized frames close that connection only; real peers keep working", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17141 },
      b: { host: "127.0.0.42", port: 17142 },
    };
    const a = makeNode("a", cluster);
    const b = makeNode("b", cluster);
    await Promise.all([a.transport.start(), b.transport.start()]);
    await waitFor(() => connected(a, "b") && connected(b, "a"), "links up");

    const attacks: Array<[string, Uint8Array]> = [
      ["unknown frame kind", new Uint8Array([0, 0, 0, 3, 9, 9, 9])],
      ["oversized length prefix", new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3])],
      // 1 MiB is a legal message frame, but not before the hello: refused unbuffered.
      ["a large frame before any hello", new Uint8Array([0, 0x10, 0, 0, 1, 2, 3])],
      ["a message before any hello", encodeMessagesFrame([heartbeat("a", "b", 99)])],
      ["random bytes", Uint8Array.from({ length: 200 }, (_, i) => (i * 73 + 11) & 0xff)],
    ];
    for (const [what, bytes] of attacks) {
      const raw = await rawConnect("127.0.0.42", 17142);
      raw.socket.write(bytes);
      await raw.closed;
      // Logged with its address; warned only once for all of them (the rest at debug).
      expect(loggedAbout(b, raw.local), what).toBe(true);
    }
    expect(b.logs.filter((line) => line.level === "warn").length).toBe(1);

    a.transport.send(heartbeat("a", "b", 1));
    b.transport.send(heartbeat("b", "a", 2));
    await waitFor(
      () => b.received.length === 1 && a.received.length === 1,
      "messages after attacks",
    );
    expect(contexts(b.received)).toEqual([1]);
    expect(a.peersDown).toEqual([]);
  });

  test("a message not from the handshaken name, or not to us, closes the connection", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17151 },
      b: { host: "127.0.0.42", port: 17152 },
      c: { host: "127.0.0.43", port: 17153 }, // never started
    };
    const b = makeNode("b", cluster);
    await b.transport.start();
    const hello = encodeHelloFrame({
      protocolVersion,
      clusterName: "test",
      fingerprint: "fp-1",
      fingerprintFields,
      name: "c",
      incarnation: "c-1",
      nonce: new Uint8Array(16),
      auth: new Uint8Array(0),
      hasState: false,
      recovering: true,
      term: 0,
      lastIndex: 0,
    });
    for (const message of [heartbeat("a", "b", 1), heartbeat("c", "a", 1)]) {
      const raw = await rawConnect("127.0.0.42", 17152);
      raw.socket.write(hello);
      // A valid message first: it is delivered, so the handshake worked.
      raw.socket.write(encodeMessagesFrame([heartbeat("c", "b", 7)]));
      raw.socket.write(encodeMessagesFrame([message]));
      await raw.closed;
      expect(raw.received.length).toBeGreaterThan(0); // the accepting HelloReply
      expect(warnedAbout(b, raw.local)).toBe(true);
    }
    expect(b.received).toEqual([heartbeat("c", "b", 7), heartbeat("c", "b", 7)]);
  });

  test("a peer that restarts is reconnected automatically", async () => {
    const cluster = {
      a: { host: "127.0.0.46", port: 17161 },
      b: { host: "127.0.0.47", port: 17162 },
    };
    const a = makeNode("a", cluster);
    const b1 = makeNode("b", cluster);
    await Promise.all([a.transport.start(), b1.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    await waitFor(() => b1.received.length === 1, "first message");

    await b1.transport.close();
    await waitFor(() => a.peersDown.length === 1, "onPeerDown");
    expect(a.peersDown).toEqual(["b"]);
    expect(connected(a, "b")).toBe(false);

    const b2 = makeNode("b", cluster, { incarnation: "b-2" });
    await b2.transport.start();
    a.transport.send(heartbeat("a", "b", 2));
    b2.transport.send(heartbeat("b", "a", 3));
    await waitFor(
      () => b2.received.length === 1 && a.received.length === 1,
      "messages after restart",
    );
    expect(contexts(b2.received)).toEqual([2]);
    expect(a.transport.links()[0]).toMatchObject({
      connected: true,
      incarnation: "b-2",
      lastError: null,
    });
  });

  test("setPeerAddress redials the new address", async () => {
    const cluster = {
      a: { host: "127.0.0.48", port: 17171 },
      b: { host: "127.0.0.49", port: 17172 },
    };
    const a = makeNode("a", { ...cluster, b: { host: "127.0.0.49", port: 17179 } }); // stale
    const b = makeNode("b", cluster);
    await Promise.all([a.transport.start(), b.transport.start()]);
    await waitFor(() => a.transport.links()[0]?.lastError !== null, "a failed dial");
    expect(connected(a, "b")).toBe(false);
    a.transport.setPeerAddress("b", "127.0.0.49", 17172);
    await waitFor(() => connected(a, "b"), "link at the new address", 1000);
    expect(a.transport.links()[0]?.address).toBe("127.0.0.49:17172");
    expect(() => a.transport.setPeerAddress("z", "127.0.0.1", 1)).toThrow('Unknown peer "z"');

    // An address change on an established link tears it down and reports it.
    a.transport.setPeerAddress("b", "127.0.0.49", 17179);
    expect(a.peersDown).toEqual(["b"]);
    expect(connected(a, "b")).toBe(false);
  });

  test("a full queue drops the newest messages and counts them", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17181 },
      b: { host: "127.0.0.42", port: 17182 },
    };
    const a = makeNode("a", cluster);
    await a.transport.start();
    const sent = outboundQueueMessagesMax + 100;
    for (let i = 1; i <= sent; i++) a.transport.send(heartbeat("a", "b", i));
    expect(a.transport.links()[0]).toMatchObject({
      queuedMessages: outboundQueueMessagesMax,
      droppedMessages: 100,
    });
    const b = makeNode("b", cluster);
    await b.transport.start();
    await waitFor(() => b.received.length === outboundQueueMessagesMax, "the queued messages");
    expect(contexts(b.received)).toEqual(range(1, outboundQueueMessagesMax));
  });

  test(
    "an inbound connection that sends no hello is closed after the hello timeout",
    async () => {
      const cluster = {
        a: { host: "127.0.0.41", port: 17191 },
        b: { host: "127.0.0.42", port: 17192 },
      };
      const b = makeNode("b", cluster);
      await b.transport.start();
      const started = Date.now();
      const raw = await rawConnect("127.0.0.42", 17192);
      await raw.closed;
      expect(Date.now() - started).toBeGreaterThanOrEqual(helloTimeoutMs - 50);
      expect(b.logs.some((line) => line.message.includes("No hello within"))).toBe(true);
      expect(warnedAbout(b, raw.local)).toBe(true);
    },
    5 * helloTimeoutMs,
  );
});

test("start rejects with the address when the peer port is taken", async () => {
  const cluster = {
    a: { host: "127.0.0.41", port: 17201 },
    b: { host: "127.0.0.42", port: 17202 },
  };
  await makeNode("a", cluster).transport.start();
  const second = makeNode("a", cluster);
  await expect(second.transport.start()).rejects.toThrow(
    "Cannot listen for peers on 127.0.0.41:17201: EADDRINUSE",
  );
});

describe("backoffMs", () => {
  test("grows exponentially from the minimum to the cap, jittered in the upper half", () => {
    expect(backoffMs(0, () => 0)).toBe(25);
    expect(backoffMs(0, () => 0.999)).toBeCloseTo(50, 0);
    expect(backoffMs(3, () => 0)).toBe(200);
    expect(backoffMs(10, () => 0)).toBe(1000);
    expect(backoffMs(1000, () => 0.999)).toBeLessThanOrEqual(2000);
  });
});
