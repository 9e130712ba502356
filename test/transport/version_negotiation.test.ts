// Protocol version negotiation between real transports (loopback 127.0.0.41-42, ports
// 18950-18959): each binary speaks a range of versions; a link uses the highest both
// speak, each direction on its own; a member that shares none is refused both ways with a
// reason that names both versions and what to do. The ranges are given to the transports
// (TcpTransportOptions.protocolVersions), as a newer or older keel would have them.

import { afterEach, expect, test } from "bun:test";
import type { NodeId } from "../../src/consensus/types.ts";
import { Prng } from "../../src/lib/prng.ts";
import {
  isVersionRefusal,
  type ProtocolRange,
  protocolVersions,
  versionRefusalReason,
} from "../../src/transport/handshake.ts";
import { type LogLevel, TcpTransport } from "../../src/transport/tcp.ts";

const secret = new TextEncoder().encode("version negotiation test secret!");
const opened: TcpTransport[] = [];

afterEach(async () => {
  await Promise.all(opened.splice(0).map((transport) => transport.close()));
});

interface Node {
  transport: TcpTransport;
  logs: string[];
}

function pair(port: number, a: ProtocolRange, b: ProtocolRange): { a: Node; b: Node } {
  const cluster: Record<NodeId, { host: string; port: number; range: ProtocolRange }> = {
    a: { host: "127.0.0.41", port, range: a },
    b: { host: "127.0.0.42", port: port + 1, range: b },
  };
  const make = (name: NodeId): Node => {
    const self = cluster[name]!;
    const logs: string[] = [];
    const prng = new Prng(self.port);
    const transport = new TcpTransport({
      self: { name, incarnation: `${name}-1` },
      listen: { host: self.host, port: self.port },
      peers: Object.entries(cluster).filter(([peer]) => peer !== name).map(([peer, at]) => ({
        name: peer,
        host: at.host,
        port: at.port,
      })),
      clusterName: "negotiation",
      fingerprint: "fp",
      fingerprintFields: { clusterName: "c" },
      log: (_level: LogLevel, message: string) => logs.push(message),
      random: () => prng.next(),
      secret,
      protocolVersions: self.range,
    });
    opened.push(transport);
    return { transport, logs };
  };
  return { a: make("a"), b: make("b") };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms: ${what}`);
    await Bun.sleep(5);
  }
}

const link = (node: Node) => node.transport.links()[0]!;

test("two members of the same range link at its highest version", async () => {
  const { a, b } = pair(18950, { min: 2, max: 3 }, { min: 2, max: 3 });
  await Promise.all([a.transport.start(), b.transport.start()]);
  await waitFor(() => link(a).connected && link(b).connected, "linked both ways");
  expect(link(a).protocolVersion).toBe(3);
  expect(link(b).protocolVersion).toBe(3);
});

test("a newer member links with an older one at the older one's version, both ways", async () => {
  const { a, b } = pair(18952, { min: 2, max: 3 }, { min: 2, max: 2 });
  await Promise.all([a.transport.start(), b.transport.start()]);
  await waitFor(() => link(a).connected && link(b).connected, "linked both ways");
  // a proposed 3, b refused it, a redialled at once with 2.
  expect(link(a).protocolVersion).toBe(2);
  expect(link(b).protocolVersion).toBe(2);
  expect(a.logs).toContain('Peer "b" does not speak protocol 3; trying 2');
});

test("members that share no version are refused both ways, naming both and what to do", async () => {
  const { a, b } = pair(18954, { min: 3, max: 3 }, { min: 2, max: 2 });
  await Promise.all([a.transport.start(), b.transport.start()]);
  await waitFor(
    () => link(a).lastError?.includes("refused") === true && b.logs.some((l) => /refused/.test(l)),
    "refused both ways",
  );
  await waitFor(() => link(b).lastError?.includes("refused our handshake") === true, "b refused");
  expect(link(a).connected).toBe(false);
  expect(link(b).connected).toBe(false);
  expect(link(a).lastError).toBe(
    'Peer "b" refused our handshake: Protocol version 3 is not spoken here (this member ' +
      "speaks protocol 2): the peer runs a newer keel: upgrade this member to a keel that " +
      "speaks protocol 3, or run a keel that speaks protocol 2 on the peer; this member " +
      "speaks protocol 3",
  );
  expect(link(b).lastError).toBe(
    'Peer "a" refused our handshake: Protocol version 2 is not spoken here (this member ' +
      "speaks protocol 3): the peer runs an older keel: upgrade it to a keel that speaks " +
      "protocol 3; this member speaks protocol 2",
  );
});

test("a version refusal is recognised from this keel and from a keel of before negotiation", () => {
  expect(isVersionRefusal(versionRefusalReason(4, { min: 2, max: 3 }))).toBe(true);
  // What a keel that spoke exactly one version answered.
  expect(isVersionRefusal("Protocol version 3 differs from ours (2)")).toBe(true);
  expect(isVersionRefusal('Cluster name "x" differs from ours ("y")')).toBe(false);
  expect(isVersionRefusal(undefined)).toBe(false);
  expect(protocolVersions.min).toBeLessThanOrEqual(protocolVersions.max);
});
