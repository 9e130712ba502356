// Authenticated peer handshakes (handshake.ts, tcp.ts) and peer links over TLS, with real
// sockets on loopback addresses 127.0.0.41-49, ports 17301-17399. Every test uses its own
// ports and closes what it opened.

import { afterAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { concatBytes } from "../../src/lib/bytes.ts";
import {
  decodeFrame,
  encodeChallengeFrame,
  encodeHelloReplyFrame,
  type Frame,
} from "../../src/transport/codec.ts";
import { FrameDecoder } from "../../src/transport/frame.ts";
import {
  connected,
  fingerprintFields,
  heartbeat,
  type LogLine,
  makeNode,
  onCleanup,
  rawConnect,
  type TestNode,
  waitFor,
} from "./harness.ts";
import { checkHelloAuth, checkReplyAuth, helloAuth } from "../../src/transport/handshake.ts";
import { type LogLevel, type PeerTls } from "../../src/transport/tcp.ts";

const secret = new TextEncoder().encode("correct horse battery staple 42");
const otherSecret = new TextEncoder().encode("a different secret, same length");
function logged(node: TestNode, level: LogLevel, text: string): LogLine | undefined {
  return node.logs.find((line) => line.level === level && line.message.includes(text));
}

/** frames decodes a recorded byte stream into its frames. */
function frames(stream: Uint8Array): Frame[] {
  return new FrameDecoder().push(stream).map(decodeFrame);
}

/**
 * recordingProxy listens at `listen` and forwards every connection to `target`, keeping
 * what the dialling side sent on each connection: a wire recording of real handshakes.
 */
function recordingProxy(
  listen: { host: string; port: number },
  target: { host: string; port: number },
): { sent: Uint8Array[][] } {
  const sent: Uint8Array[][] = [];
  interface ProxyConn {
    chunks: Uint8Array[];
    upstream: Socket<undefined> | null;
    early: Uint8Array[];
  }
  const listener: TCPSocketListener<ProxyConn | undefined> = Bun.listen<ProxyConn | undefined>({
    hostname: listen.host,
    port: listen.port,
    data: undefined,
    socket: {
      binaryType: "uint8array",
      open: (client) => {
        const conn: ProxyConn = { chunks: [], upstream: null, early: [] };
        client.data = conn;
        sent.push(conn.chunks);
        void Bun.connect({
          hostname: target.host,
          port: target.port,
          socket: {
            binaryType: "uint8array",
            data: (_upstream, chunk) => void client.write(chunk),
            close: () => void client.end(),
          },
        }).then((upstream) => {
          conn.upstream = upstream;
          for (const chunk of conn.early.splice(0)) upstream.write(chunk);
        });
      },
      data: (client, chunk) => {
        const conn = client.data!;
        conn.chunks.push(chunk.slice());
        if (conn.upstream === null) conn.early.push(chunk.slice());
        else conn.upstream.write(chunk);
      },
      close: (client) => void client.data?.upstream?.end(),
    },
  });
  onCleanup(() => listener.stop(true));
  return { sent };
}

describe("authenticated handshakes", () => {
  test("the same secret on both sides: linked both ways, messages flow", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17301 },
      b: { host: "127.0.0.42", port: 17302 },
    };
    const a = makeNode("a", cluster, { secret });
    const b = makeNode("b", cluster, { secret });
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    b.transport.send(heartbeat("b", "a", 2));
    await waitFor(() => a.received.length === 1 && b.received.length === 1, "a message each way");
    expect(connected(a, "b") && connected(b, "a")).toBe(true);
    expect(logged(a, "info", "Listening for peers")?.fields["auth"]).toBe("hmac-sha256");
    expect(a.logs.filter((line) => line.level === "warn")).toEqual([]);
  });

  test("a wrong secret is refused both ways, and both sides log it with the address", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17311 },
      b: { host: "127.0.0.42", port: 17312 },
    };
    const a = makeNode("a", cluster, { secret });
    const b = makeNode("b", cluster, { secret: otherSecret });
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    b.transport.send(heartbeat("b", "a", 2));
    for (const [node, peer] of [[a, b], [b, a]] as const) {
      // As the acceptor: "Refused peer from 127.0.0.1:PORT: bad handshake authentication".
      await waitFor(
        () => logged(node, "warn", "Refused peer from") !== undefined,
        `${node.name} refusing ${peer.name}`,
      );
      const refusing = logged(node, "warn", "Refused peer from")!;
      expect(refusing.message).toMatch(
        /^Refused peer from 127\.0\.0\.\d+:\d+: bad handshake authentication \(a different secret\?\)$/,
      );
      expect(refusing.fields).toMatchObject({
        claimedName: peer.name,
        remoteAddress: expect.stringMatching(/^127\.0\.0\.\d+:\d+$/),
      });
      // As the dialler: the acceptor's reply is signed with another secret, so it is not
      // believed either.
      await waitFor(
        () => logged(node, "warn", `Refused peer "${peer.name}" at`) !== undefined,
        `${node.name} refused by ${peer.name}`,
      );
      expect(logged(node, "warn", `Refused peer "${peer.name}" at`)?.message).toContain(
        "bad handshake authentication",
      );
      expect(connected(node, peer.name)).toBe(false);
      expect(node.transport.links()[0]?.lastError).toContain("bad handshake authentication");
    }
    await Bun.sleep(100);
    expect(a.received).toEqual([]);
    expect(b.received).toEqual([]);
    // An unproven refusal is never passed on (it could claim "fenced").
    expect(a.refusals).toEqual([]);
    expect(b.refusals).toEqual([]);
  });

  test("a node with a secret and one without refuse each other", async () => {
    const cluster = {
      a: { host: "127.0.0.43", port: 17321 },
      b: { host: "127.0.0.44", port: 17322 },
    };
    const a = makeNode("a", cluster, { secret });
    const b = makeNode("b", cluster); // dev mode
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    b.transport.send(heartbeat("b", "a", 2));
    await waitFor(
      () => logged(a, "warn", "Refused peer from") !== undefined,
      "a refusing b's unsigned hello",
    );
    expect(logged(a, "warn", "Refused peer from")?.message).toContain(
      "bad handshake authentication: the peer sent none",
    );
    await waitFor(
      () => logged(b, "warn", "Refused peer from") !== undefined,
      "b refusing a's signed hello",
    );
    expect(logged(b, "warn", "Refused peer from")?.message).toContain(
      "bad handshake authentication: the peer has a cluster secret and this node has none",
    );
    await waitFor(
      () =>
        logged(a, "warn", 'Refused peer "b" at') !== undefined &&
        logged(b, "warn", 'Refused peer "a" at') !== undefined,
      "both diallers refusing the replies",
    );
    expect(logged(b, "info", "Listening for peers")?.fields["auth"]).toBe("none (dev mode)");
    expect(a.received).toEqual([]);
    expect(b.received).toEqual([]);
    expect(connected(a, "b") || connected(b, "a")).toBe(false);
  });

  test("a recorded handshake replayed on a new connection is refused", async () => {
    const cluster = {
      a: { host: "127.0.0.45", port: 17331 },
      b: { host: "127.0.0.46", port: 17332 },
    };
    // a dials b through a proxy that records what a sends.
    const proxyAt = { host: "127.0.0.47", port: 17333 };
    const proxy = recordingProxy(proxyAt, cluster.b);
    const a = makeNode("a", { a: cluster.a, b: proxyAt }, { secret });
    const b = makeNode("b", { ...cluster, a: { host: "127.0.0.45", port: 17339 } }, { secret });
    await Promise.all([a.transport.start(), b.transport.start()]);
    a.transport.send(heartbeat("a", "b", 1));
    await waitFor(() => b.received.length === 1, "a's message through the proxy");
    const recorded = concatBytes(proxy.sent[0] ?? []);
    const [hello, ...rest] = frames(recorded);
    expect(hello?.kind).toBe("hello");
    expect(rest.map((frame) => frame.kind)).toEqual(["messages"]);
    const accepted = () => b.logs.filter((line) => line.message.startsWith("Accepted")).length;
    expect(accepted()).toBe(1);

    // The very bytes a sent (its signed Hello and its message), replayed from elsewhere.
    const raw = await rawConnect("127.0.0.46", 17332);
    raw.socket.write(recorded);
    await raw.closed;
    const answer = frames(concatBytes(raw.received));
    expect(answer.map((frame) => frame.kind)).toEqual(["challenge", "helloReply"]);
    const reply = answer[1]?.kind === "helloReply" ? answer[1].reply : undefined;
    // The replayer proved nothing: it is not told who refused it (anonymousName "?").
    expect(reply).toMatchObject({
      accepted: false,
      reason: "bad handshake authentication",
      name: "?",
      incarnation: "?",
      hasState: false,
    });
    const refusing = logged(b, "warn", `Refused peer from ${raw.local}`);
    expect(refusing?.message).toBe(
      `Refused peer from ${raw.local}: bad handshake authentication (a different secret?)`,
    );
    expect(refusing?.fields).toMatchObject({ remoteAddress: raw.local, claimedName: "a" });
    expect(accepted()).toBe(1);
    expect(b.received.length).toBe(1); // the replayed message was not delivered
    // The genuine link is untouched.
    a.transport.send(heartbeat("a", "b", 2));
    await waitFor(() => b.received.length === 2, "a's next message");
  });

  test("a forged reply (no valid proof) is not believed: no fencing, no link", async () => {
    const fakeB = { host: "127.0.0.48", port: 17341 };
    const a = makeNode("a", { a: { host: "127.0.0.41", port: 17342 }, b: fakeB }, { secret });
    const listener = Bun.listen<undefined>({
      hostname: fakeB.host,
      port: fakeB.port,
      data: undefined,
      socket: {
        binaryType: "uint8array",
        open: (socket) => void socket.write(encodeChallengeFrame({ nonce: new Uint8Array(16) })),
        data: (socket) => {
          socket.write(encodeHelloReplyFrame({
            accepted: false,
            reason: "Your incarnation was replaced",
            name: "b",
            incarnation: "b-9",
            hasState: true,
            recovering: false,
            fenced: true,
            rolledBack: false,
            auth: new Uint8Array(32).fill(7),
          }));
          socket.end();
        },
      },
    });
    onCleanup(() => listener.stop(true));
    await a.transport.start();
    await waitFor(() => logged(a, "warn", 'Refused peer "b" at') !== undefined, "a refusing");
    const line = logged(a, "warn", 'Refused peer "b" at')!;
    expect(line.message).toBe(
      'Refused peer "b" at 127.0.0.48:17341: bad handshake authentication (a different secret?)',
    );
    expect(line.fields["unverifiedReply"]).toBe("refused: Your incarnation was replaced");
    expect(a.refusals).toEqual([]);
    expect(a.transport.handshakes()).toEqual([]);
  });

  test("a hello signed for another member says the dialler has a stale address", async () => {
    const cluster = {
      a: { host: "127.0.0.41", port: 17351 },
      b: { host: "127.0.0.42", port: 17352 },
      c: { host: "127.0.0.43", port: 17353 },
    };
    // a believes b is where c listens.
    const a = makeNode("a", { ...cluster, b: cluster.c }, { secret });
    const c = makeNode("c", { ...cluster, a: { host: "127.0.0.41", port: 17359 } }, { secret });
    await Promise.all([a.transport.start(), c.transport.start()]);
    await waitFor(() => logged(c, "warn", "Refused peer from") !== undefined, "c refusing");
    expect(logged(c, "warn", "Refused peer from")?.message).toContain(
      'the peer meant to reach "b", not us',
    );
    await waitFor(
      () => logged(a, "warn", 'The member at 127.0.0.43:17353 is "c", not "b"') !== undefined,
      "a told who answered",
    );
  });

  test("the proofs: each checks only with the secret, nonces and name it was made for", () => {
    const hello = {
      protocolVersion: 2,
      clusterName: "test",
      fingerprint: "fp-1",
      fingerprintFields,
      name: "a",
      incarnation: "a-1",
      nonce: new Uint8Array(16).fill(1),
      auth: new Uint8Array(0),
      hasState: true,
      recovering: false,
      term: 3,
      lastIndex: 9,
    };
    const challenge = new Uint8Array(16).fill(2);
    const signed = { ...hello, auth: helloAuth(secret, challenge, "b", hello) };
    expect(signed.auth.byteLength).toBe(32);
    expect(checkHelloAuth(secret, challenge, "b", signed)).toEqual({ ok: true });
    expect(checkHelloAuth(otherSecret, challenge, "b", signed).ok).toBe(false);
    expect(checkHelloAuth(secret, new Uint8Array(16).fill(3), "b", signed).ok).toBe(false);
    expect(checkHelloAuth(secret, challenge, "c", signed).ok).toBe(false);
    expect(checkHelloAuth(secret, challenge, "b", { ...signed, term: 4 }).ok).toBe(false);
    expect(checkHelloAuth(secret, challenge, "b", { ...signed, auth: signed.auth.subarray(1) }))
      .toMatchObject({ ok: false });
    expect(checkHelloAuth(undefined, challenge, "b", hello)).toEqual({ ok: true });
    const reply = {
      accepted: true,
      name: "b",
      incarnation: "b-1",
      hasState: true,
      recovering: false,
      fenced: false,
      rolledBack: false,
      auth: new Uint8Array(0),
    };
    expect(checkReplyAuth(undefined, hello.nonce, challenge, reply)).toEqual({ ok: true });
    expect(checkReplyAuth(secret, hello.nonce, challenge, reply)).toMatchObject({ ok: false });
  });
});

// ---- TLS -------------------------------------------------------------------------------

const openssl = spawnSync("openssl", ["version"]).status === 0;
const tlsDir = openssl ? mkdtempSync(join(tmpdir(), "keel-tls-")) : "";
afterAll(() => {
  if (tlsDir !== "") rmSync(tlsDir, { recursive: true, force: true });
});

/** makeCa creates a CA and a certificate it issues for 127.0.0.41-49; PEM text. */
function makeCa(name: string): PeerTls & { ca: string } {
  const run = (...args: string[]) => {
    const result = spawnSync("openssl", args, { cwd: tlsDir, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr}`);
  };
  const curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(
    "req",
    "-x509",
    ...curve,
    "-keyout",
    `${name}-ca.key`,
    "-out",
    `${name}-ca.pem`,
    "-days",
    "2",
    "-subj",
    `/CN=${name} CA`,
  );
  run("req", ...curve, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  const ips = Array.from({ length: 9 }, (_, i) => `IP:127.0.0.${41 + i}`).join(",");
  writeFileSync(
    join(tlsDir, `${name}.ext`),
    `subjectAltName=${ips}\nextendedKeyUsage=serverAuth,clientAuth\n`,
  );
  run(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${name}-ca.pem`,
    "-CAkey",
    `${name}-ca.key`,
    "-CAcreateserial",
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  );
  const read = (file: string) => readFileSync(join(tlsDir, file), "utf8");
  return { cert: read(`${name}.pem`), key: read(`${name}.key`), ca: read(`${name}-ca.pem`) };
}

if (!openssl) console.warn("note: openssl not found: the peer TLS tests are skipped");

describe.skipIf(!openssl)(
  "peer links over TLS (skipped without openssl, which makes the certificates)",
  () => {
    test("mutual TLS with the cluster CA: linked, authenticated, messages flow", async () => {
      const tls = makeCa("cluster");
      const cluster = {
        a: { host: "127.0.0.41", port: 17361 },
        b: { host: "127.0.0.42", port: 17362 },
      };
      const a = makeNode("a", cluster, { secret, tls });
      const b = makeNode("b", cluster, { secret, tls });
      await Promise.all([a.transport.start(), b.transport.start()]);
      for (let i = 1; i <= 500; i++) a.transport.send(heartbeat("a", "b", i));
      b.transport.send(heartbeat("b", "a", 1));
      await waitFor(() => b.received.length === 500 && a.received.length === 1, "messages");
      expect(logged(a, "info", "Listening for peers")?.fields["tls"]).toBe(
        "on, peers verified (mutual)",
      );
      // A plain TCP client gets no challenge frame ([u32 18][kind 5][16][nonce]), only TLS.
      const raw = await rawConnect("127.0.0.42", 17362);
      raw.socket.write(new Uint8Array([0, 0, 0, 1, 1]));
      await Promise.race([raw.closed, Bun.sleep(500)]);
      expect([...concatBytes(raw.received).subarray(0, 5)]).not.toEqual([0, 0, 0, 18, 5]);
    });

    test("a peer whose certificate is from another CA is refused both ways", async () => {
      const good = makeCa("good");
      const rogue = makeCa("rogue");
      const cluster = {
        a: { host: "127.0.0.43", port: 17371 },
        b: { host: "127.0.0.44", port: 17372 },
      };
      // b holds the secret but not a certificate of the cluster CA.
      const a = makeNode("a", cluster, { secret, tls: good });
      const b = makeNode("b", cluster, { secret, tls: { ...rogue, ca: good.ca } });
      await Promise.all([a.transport.start(), b.transport.start()]);
      a.transport.send(heartbeat("a", "b", 1));
      b.transport.send(heartbeat("b", "a", 1));
      // a checks b's certificate when b dials it, and when it dials b.
      await waitFor(
        () =>
          logged(a, "warn", "Closed the connection from") !== undefined &&
          logged(a, "warn", 'Cannot link to peer "b": TLS handshake failed') !== undefined,
        "a refusing b's certificate both ways",
      );
      expect(logged(a, "warn", "Closed the connection from")?.message).toMatch(
        /^Closed the connection from 127\.0\.0\.\d+:\d+: TLS handshake failed: unable to verify/,
      );
      await Bun.sleep(100);
      expect(a.received).toEqual([]);
      expect(b.received).toEqual([]);
      expect(connected(a, "b") || connected(b, "a")).toBe(false);
    });
  },
);
