// What a peer that has not proven the cluster secret learns from the peer port: a
// refusal with a generic reason, nothing that names the member (its name, incarnation or
// state). Real sockets on 127.0.0.61-69, ports 17501-17599.

import { describe, expect, test } from "bun:test";
import { concatBytes } from "../../src/lib/bytes.ts";
import { decodeFrame, encodeHelloFrame, type Frame } from "../../src/transport/codec.ts";
import { FrameDecoder } from "../../src/transport/frame.ts";
import { type Hello, helloAuth, protocolVersion } from "../../src/transport/handshake.ts";
import { connected, fingerprintFields, makeNode, rawConnect, waitFor } from "./harness.ts";

const secret = new TextEncoder().encode("correct horse battery staple 42");
const otherSecret = new TextEncoder().encode("a different secret, same length");

const cluster = {
  "node-alpha": { host: "127.0.0.61", port: 17501 },
  "node-bravo": { host: "127.0.0.62", port: 17502 },
};

function frames(chunks: Uint8Array[]): Frame[] {
  return new FrameDecoder().push(concatBytes(chunks)).map(decodeFrame);
}

function hello(fields: Partial<Hello>): Hello {
  return {
    protocolVersion,
    clusterName: "test",
    fingerprint: "fp-1",
    fingerprintFields,
    name: "node-alpha",
    incarnation: "intruder-1",
    nonce: new Uint8Array(16).fill(3),
    auth: new Uint8Array(0),
    hasState: true,
    recovering: false,
    term: 1,
    lastIndex: 1,
    ...fields,
  };
}

/** handshake answers node-bravo's challenge with the Hello `make` builds; the reply. */
async function handshake(make: (challenge: Uint8Array) => Hello) {
  const raw = await rawConnect("127.0.0.62", 17502);
  await waitFor(() => frames(raw.received).length >= 1, "the challenge");
  const [challenge] = frames(raw.received);
  if (challenge?.kind !== "challenge") throw new Error(`got ${challenge?.kind}`);
  raw.socket.write(encodeHelloFrame(make(challenge.challenge.nonce)));
  await raw.closed;
  const answer = frames(raw.received);
  expect(answer.map((frame) => frame.kind)).toEqual(["challenge", "helloReply"]);
  const reply = answer[1]?.kind === "helloReply" ? answer[1].reply : undefined;
  return { reply, text: new TextDecoder("latin1").decode(concatBytes(raw.received)) };
}

describe("a refusal to an unproven peer does not identify the member", () => {
  test("a wrong secret, no proof, another protocol version: generic reason, no name", async () => {
    const bravo = makeNode("node-bravo", cluster, {
      secret,
      self: { name: "node-bravo", incarnation: "inc-bravo-7f3a9c" },
      localState: () => ({ hasState: true, recovering: true, term: 4, lastIndex: 80 }),
    });
    await bravo.transport.start();
    const attempts: Array<[string, (challenge: Uint8Array) => Hello]> = [
      ["another secret", (challenge) => {
        const unsigned = hello({});
        return { ...unsigned, auth: helloAuth(otherSecret, challenge, "node-bravo", unsigned) };
      }],
      ["no proof", () => hello({})],
      ["another protocol version", () => hello({ protocolVersion: protocolVersion + 1 })],
    ];
    for (const [what, make] of attempts) {
      const { reply, text } = await handshake(make);
      expect(reply?.accepted, what).toBe(false);
      expect(reply?.reason, what).toMatch(/^(bad handshake authentication|Protocol version)/);
      expect([reply?.hasState, reply?.recovering, reply?.fenced], what)
        .toEqual([false, false, false]);
      expect(text, what).not.toContain("bravo");
      expect(text, what).not.toContain("7f3a9c");
    }
  });

  test("members with the secret still link and learn each other's incarnation", async () => {
    const alpha = makeNode("node-alpha", cluster, { secret });
    const bravo = makeNode("node-bravo", cluster, { secret });
    await Promise.all([alpha.transport.start(), bravo.transport.start()]);
    await waitFor(
      () => connected(alpha, "node-bravo") && connected(bravo, "node-alpha"),
      "links both ways",
    );
    expect(alpha.transport.links()[0]?.incarnation).toBe("node-bravo-1");
  });
});
