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

  test("junk on the peer port is warned once, then counted; every connection is still closed", async () => {
    const cluster = {
      a: { host: "127.0.0.53", port: 17411 },
      b: { host: "127.0.0.54", port: 17412 },
    };
    const b = makeNode("b", cluster);
    await b.transport.start();
    const junk = [
      new Uint8Array([0, 0, 0, 3, 9, 9, 9]), // unknown frame kind
      new Uint8Array([0xff, 0xff, 0xff, 0xff, 1]), // oversized length prefix
      new Uint8Array([0, 0, 0, 1, 3]), // a truncated message before any hello
      Uint8Array.from({ length: 200 }, (_, i) => (i * 73 + 11) & 0xff),
    ];
    const locals: string[] = [];
    for (let round = 0; round < 3; round++) {
      for (const bytes of junk) {
        const raw = await rawConnect("127.0.0.54", 17412);
        raw.socket.write(bytes);
        await raw.closed;
        locals.push(raw.local);
      }
    }
    const closing = lines(b, "Closed the connection from");
    // Each of the 12 connections was closed and is in the log, at debug after the first.
    for (const local of locals) {
      expect(closing.some((line) => line.fields["remoteAddress"] === local)).toBe(true);
    }
    expect(closing.filter((line) => line.level === "warn").length).toBe(1);
  });
});
