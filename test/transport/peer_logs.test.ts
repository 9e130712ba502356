// What the peer port logs when peers or strangers misbehave again and again: each repeated
// line is said once, then with a count (RepeatLog), never once per connection. Real
// sockets on 127.0.0.51-59, ports 17401-17499.

import { describe, expect, test } from "bun:test";
import { connected, heartbeat, lines, makeNode, rawConnect, waitFor } from "./harness.ts";

describe("repeated refusals and junk are logged once, then counted", () => {
  test("a config mismatch is warned once per peer and reason on each side, not per redial", async () => {
    const cluster = {
      a: { host: "127.0.0.51", port: 17401 },
      b: { host: "127.0.0.52", port: 17402 },
    };
    const a = makeNode("a", cluster);
    const b = makeNode("b", cluster, {
      fingerprint: "fp-2",
      fingerprintFields: { clusterName: "c1", members: "m1", "raft.electionTimeoutMs": "e2" },
    });
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    // Each side refuses the other's Hello on every redial (backoff from 25 ms): wait for
    // five refusals each way, at any level.
    for (const [node, peer] of [[a, "b"], [b, "a"]] as const) {
      await waitFor(
        () =>
          lines(node, `Refused the handshake of "${peer}"`).length >= 5 &&
          lines(node, `Peer "${peer}" refused our handshake`).length >= 5,
        `${node.name} refusing and refused five times`,
      );
    }
    for (const [node, peer] of [[a, "b"], [b, "a"]] as const) {
      // As the acceptor and as the dialler: one warning each, the rest at debug.
      expect(lines(node, `Refused the handshake of "${peer}"`, "warn").length).toBe(1);
      expect(lines(node, `Peer "${peer}" refused our handshake`, "warn").length).toBe(1);
      expect(lines(node, `Refused the handshake of "${peer}"`, "warn")[0]?.fields)
        .toMatchObject({ peer, differingFields: ["raft.electionTimeoutMs"] });
    }
    expect(connected(a, "b") || connected(b, "a")).toBe(false);
  });
});
