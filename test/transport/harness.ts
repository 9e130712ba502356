// Helpers for the transport tests on real sockets (tcp_auth, peer_logs, flood): transports with a
// recording log, waiting, raw sockets. Loopback addresses 127.0.0.x; each test its ports.

import { afterEach } from "bun:test";
import type { Socket } from "bun";
import type { Message, NodeId } from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";
import { type LogLevel, TcpTransport, type TcpTransportOptions } from "../../src/transport/tcp.ts";

export interface LogLine {
  level: LogLevel;
  message: string;
  fields: Record<string, unknown>;
}

export interface TestNode {
  name: NodeId;
  transport: TcpTransport;
  received: Message[];
  logs: LogLine[];
  /** Handshake refusals this node heard, as "peer: reason". */
  refusals: string[];
}

export type Cluster = Record<NodeId, { host: string; port: number }>;

export const fingerprintFields = {
  clusterName: "c1",
  members: "m1",
  "raft.electionTimeoutMs": "e1",
};

const opened: TcpTransport[] = [];
const cleanups: Array<() => void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await Promise.all(opened.splice(0).map((transport) => transport.close()));
});

/** onCleanup runs after the current test (sockets, listeners the test opened). */
export function onCleanup(cleanup: () => void): void {
  cleanups.push(cleanup);
}

export function makeNode(
  name: NodeId,
  cluster: Cluster,
  overrides: Partial<TcpTransportOptions> = {},
): TestNode {
  const self = cluster[name];
  if (self === undefined) throw new Error(`no address for ${name}`);
  const logs: LogLine[] = [];
  const prng = new Prng(self.port);
  const transport = new TcpTransport({
    self: { name, incarnation: `${name}-1` },
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
  const node: TestNode = { name, transport, received: [], logs, refusals: [] };
  transport.onMessage((message) => node.received.push(message));
  transport.onRefused((peer, reason) => node.refusals.push(`${peer}: ${reason}`));
  return node;
}

export async function waitFor(
  condition: () => boolean,
  what: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await Bun.sleep(5);
  }
}

export function heartbeat(from: NodeId, to: NodeId, context: number): Message {
  return { type: "heartbeat", term: 1, from, to, commitIndex: 0, context };
}

export function connected(node: TestNode, peer: NodeId): boolean {
  return node.transport.links().find((link) => link.name === peer)?.connected === true;
}

/** lines returns a node's log lines that contain text, at `level` or at any level. */
export function lines(node: TestNode, text: string, level?: LogLevel): LogLine[] {
  return node.logs.filter((line) =>
    line.message.includes(text) && (level === undefined || line.level === level)
  );
}

/** rawConnect opens a bare socket; closed resolves when the other side closes it. */
export async function rawConnect(host: string, port: number): Promise<{
  socket: Socket<undefined>;
  local: string;
  closed: Promise<void>;
  received: Uint8Array[];
}> {
  const received: Uint8Array[] = [];
  let onClose = () => {};
  const closed = new Promise<void>((resolve) => (onClose = resolve));
  const socket = await Bun.connect({
    hostname: host,
    port,
    socket: {
      binaryType: "uint8array",
      data: (_socket, chunk) => void received.push(chunk.slice()),
      close: () => onClose(),
    },
  });
  cleanups.push(() => socket.end());
  // Read now: a closed socket no longer knows its address.
  return { socket, local: `${socket.localAddress}:${socket.localPort}`, closed, received };
}
