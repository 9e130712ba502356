// A flood of unauthenticated connections on the peer port (defect: 64 pending handshakes,
// each held 5 s, could be taken by anyone who can connect, and a member could not link
// for as long as the flood went on). Real sockets: the flood comes from 100 source
// addresses 127.0.0.100-199 (bound with node:net), re-opened as they are closed, for a
// few seconds at most. Ports 17601-17699.

import { describe, expect, test } from "bun:test";
import net from "node:net";
import { handshakeTimeoutMs } from "../../src/transport/limits.ts";
import { connected, heartbeat, lines, makeNode, onCleanup, waitFor } from "./harness.ts";

const secret = new TextEncoder().encode("correct horse battery staple 42");

interface Flood {
  /** Connections the listener accepted far enough to send its Challenge. */
  challenged: () => number;
  stop: () => void;
}

/**
 * flood keeps one connection open from each source address to host:port, silent after
 * connecting (no hello); each closed one is re-opened 100 ms later until stop().
 */
function flood(host: string, port: number, sources: readonly string[]): Flood {
  let running = true;
  let challenged = 0;
  const sockets = new Set<net.Socket>();
  const open = (source: string) => {
    if (!running) return;
    const socket = net.connect({ host, port, localAddress: source });
    sockets.add(socket);
    let counted = false;
    socket.on("data", () => {
      if (!counted) challenged++;
      counted = true;
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      sockets.delete(socket);
      setTimeout(() => open(source), 100);
    });
  };
  for (const source of sources) open(source);
  const stop = () => {
    running = false;
    for (const socket of sockets) socket.destroy();
  };
  onCleanup(stop);
  return { challenged: () => challenged, stop };
}

const sources = Array.from({ length: 100 }, (_, i) => `127.0.0.${100 + i}`);

describe("a flood of unauthenticated connections on the peer port", () => {
  test(
    "does not stop a configured member from linking, and its warnings are rate-limited",
    async () => {
      // a listens on 127.0.0.1, the source address of its own dials on loopback, so the
      // address b knows for member a is where a's connections come from.
      const cluster = {
        a: { host: "127.0.0.1", port: 17601 },
        b: { host: "127.0.0.72", port: 17602 },
      };
      const b = makeNode("b", cluster, { secret });
      await b.transport.start();
      const attack = flood("127.0.0.72", 17602, sources);
      await waitFor(
        () => lines(b, "too many handshakes").length > 0,
        "the flood filling b's pending handshakes",
      );
      const a = makeNode("a", cluster, { secret });
      await a.transport.start();
      a.transport.send(heartbeat("a", "b", 1));
      // Well within the flood: before the fix the member waited for the strangers'
      // handshakes to time out (handshakeTimeoutMs each, re-opened at once).
      await waitFor(
        () => connected(a, "b") && b.received.length === 1,
        "a's link to b through the flood",
        handshakeTimeoutMs - 1500,
      );
      attack.stop();
      // Thousands of refusals and timeouts, a warning or two.
      expect(lines(b, "too many handshakes").length).toBeGreaterThan(1);
      expect(lines(b, "too many handshakes", "warn").length).toBe(1);
      expect(lines(b, "No hello within", "warn").length).toBeLessThanOrEqual(1);
    },
    15_000,
  );

  test("one source address holds only a few pending handshakes", async () => {
    const cluster = {
      a: { host: "127.0.0.73", port: 17611 },
      b: { host: "127.0.0.74", port: 17612 },
    };
    const b = makeNode("b", cluster, { secret });
    await b.transport.start();
    const attack = flood("127.0.0.74", 17612, Array.from({ length: 20 }, () => "127.0.0.150"));
    await waitFor(
      () => lines(b, "too many handshakes").length >= 10 && attack.challenged() > 0,
      "refusals, and challenges for the admitted",
    );
    attack.stop();
    // The others were refused before any Challenge, for their address.
    expect(attack.challenged()).toBeLessThan(20);
    expect(lines(b, "too many handshakes from this address").length).toBeGreaterThanOrEqual(10);
    expect(lines(b, "too many handshakes", "warn").length).toBe(1);
  });
});
