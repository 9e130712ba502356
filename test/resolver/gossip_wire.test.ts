import { describe, expect, test } from "bun:test";
import {
  decodeGossip,
  encodeGossip,
  type GossipClaim,
  gossipEntriesMax,
  type GossipMessage,
  gossipMessageBytesMax,
  parseGossipEndpoint,
} from "../../src/resolver/gossip_wire.ts";

const secret = new TextEncoder().encode("s3cret");

function claim(name: string, seq = 1): GossipClaim {
  return {
    name,
    incarnation: "0123456789abcdef0123456789abcdef",
    recovering: true,
    seq,
    peer: { host: "10.0.0.7", port: 7070 },
    http: { host: "::1", port: 7080 },
    gossip: { host: "node-b.example", port: 7071 },
  };
}

const message: GossipMessage = {
  cluster: "prod",
  from: "node-b",
  pull: true,
  entries: [claim("node-b", 42), claim("node-a", 7)],
};

/** body replaces a datagram's JSON body (unsigned), to feed the decoder bad shapes. */
function withBody(body: unknown): Uint8Array {
  const good = encodeGossip(message, undefined);
  const json = new TextEncoder().encode(JSON.stringify(body));
  const bytes = new Uint8Array(37 + json.length);
  bytes.set(good.subarray(0, 37));
  bytes.set(json, 37);
  return bytes;
}

describe("gossip datagrams", () => {
  test("a signed message round-trips", () => {
    const decoded = decodeGossip(encodeGossip(message, secret), secret);
    expect(decoded).toEqual({ ok: true, message });
  });

  test("an unsigned message round-trips in dev mode only", () => {
    const bytes = encodeGossip(message, undefined);
    expect(decodeGossip(bytes, undefined)).toEqual({ ok: true, message });
    expect(decodeGossip(bytes, secret)).toMatchObject({ ok: false, reason: "unsigned" });
    expect(decodeGossip(encodeGossip(message, secret), undefined)).toMatchObject({
      ok: false,
      reason: "signed-without-secret",
    });
  });

  test("every flipped bit of a signed datagram is detected", () => {
    const bytes = encodeGossip(message, secret);
    for (let index = 0; index < bytes.length; index += 7) {
      const copy = bytes.slice();
      copy[index] = copy[index]! ^ 0x10;
      const decoded = decodeGossip(copy, secret);
      expect(decoded.ok).toBe(false);
    }
  });

  test("oversize and malformed datagrams are values, never exceptions", () => {
    expect(decodeGossip(new Uint8Array(gossipMessageBytesMax + 1), undefined)).toMatchObject({
      ok: false,
      reason: "oversize",
    });
    // The helper itself builds a good datagram from a good body.
    expect(decodeGossip(withBody(normalize({ ...message })), undefined)).toEqual({
      ok: true,
      message,
    });
    const bad: unknown[] = [
      null,
      [],
      { ...message, cluster: "" },
      { ...message, from: "no spaces allowed" },
      { ...message, pull: "yes" },
      { ...message, entries: {} },
      { ...message, entries: Array.from({ length: gossipEntriesMax + 1 }, () => claim("x")) },
      { ...message, entries: [{ ...claim("x"), seq: -1 }] },
      { ...message, entries: [{ ...claim("x"), seq: 1.5 }] },
      { ...message, entries: [{ ...claim("x"), incarnation: "" }] },
      { ...message, entries: [{ ...claim("x"), incarnation: "x".repeat(65) }] },
      { ...message, entries: [{ ...claim("x"), recovering: 1 }] },
      { ...message, entries: [{ ...claim("x"), peer: "0.0.0.0:7070" }] },
      { ...message, entries: [{ ...claim("x"), peer: "[::]:7070" }] },
      { ...message, entries: [{ ...claim("x"), peer: "10.0.0.1:0" }] },
      { ...message, entries: [{ ...claim("x"), peer: "10.0.0.1" }] },
      { ...message, entries: [{ ...claim("x"), http: "bad_host:80" }] },
      { ...message, entries: [{ ...claim("x"), gossip: 7071 }] },
    ];
    for (const body of bad) {
      const encoded = body === null || Array.isArray(body) || typeof body !== "object"
        ? withBody(body)
        : withBody(normalize(body as Record<string, unknown>));
      const decoded = decodeGossip(encoded, undefined);
      expect(decoded).toMatchObject({ ok: false, reason: "malformed" });
    }
    const notJson = withBody(0);
    notJson[37] = 0xff;
    expect(decodeGossip(notJson, undefined)).toMatchObject({ ok: false, reason: "malformed" });
    expect(decodeGossip(new Uint8Array(10), undefined)).toMatchObject({ reason: "malformed" });
  });

  test("encoding refuses what the decoder would refuse for size", () => {
    const many = { ...message, entries: Array.from({ length: 17 }, (_, i) => claim(`n-${i}`)) };
    expect(() => encodeGossip(many, secret)).toThrow(RangeError);
  });

  test("advertised endpoints are dialable host:port pairs", () => {
    expect(parseGossipEndpoint("127.0.0.5:7071")).toEqual({ host: "127.0.0.5", port: 7071 });
    expect(parseGossipEndpoint("[2001:DB8::1]:7071")).toEqual({ host: "2001:db8::1", port: 7071 });
    expect(parseGossipEndpoint("Node-A.Example:1")).toEqual({ host: "node-a.example", port: 1 });
    for (const bad of ["0.0.0.0:1", "[::]:1", "1.2.3.4:65536", "300.1.1.1:5", "a:b", ":80", "x"]) {
      expect(parseGossipEndpoint(bad)).toBeUndefined();
    }
  });
});

/** normalize renders endpoint objects as "host:port" strings, as the wire has them. */
function normalize(body: Record<string, unknown>): Record<string, unknown> {
  const entries = body.entries;
  if (!Array.isArray(entries)) return body;
  return {
    ...body,
    entries: entries.map((entry: Record<string, unknown>) => {
      const out: Record<string, unknown> = { ...entry };
      for (const key of ["peer", "http", "gossip"]) {
        const value = entry[key] as { host?: string; port?: number } | string | number;
        if (typeof value === "object" && value !== null) {
          out[key] = value.host!.includes(":")
            ? `[${value.host}]:${value.port}`
            : `${value.host}:${value.port}`;
        }
      }
      return out;
    }),
  };
}
