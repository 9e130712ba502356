import { afterEach, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import {
  createLookup,
  DnsLookupError,
  type DnsServer,
  parseDnsServer,
  queryServers,
  systemLookup,
} from "../../src/resolver/dns_client.ts";
import { decodeMessage, encodeMessage, Rcode } from "../../src/resolver/dns_wire.ts";
import { TestDnsServer } from "../support/dns_server.ts";

// Real UDP on loopback: test DNS servers on 127.0.0.61 and 127.0.0.62, on free high ports
// the kernel picks. Every test stops what it started.

const started: Array<{ stop(): void }> = [];

afterEach(() => {
  for (const server of started.splice(0)) server.stop();
});

async function dnsServer(hostname = "127.0.0.61"): Promise<TestDnsServer> {
  const server = await TestDnsServer.start({ hostname });
  started.push(server);
  return server;
}

function at(server: { hostname: string; port: number }): DnsServer {
  return { host: server.hostname, port: server.port };
}

async function lookupError(promise: Promise<unknown>): Promise<DnsLookupError> {
  try {
    await promise;
  } catch (error: unknown) {
    if (error instanceof DnsLookupError) return error;
    throw error;
  }
  throw new Error("expected the lookup to fail");
}

describe("queryServers", () => {
  test("resolves an A record and returns its TTL", async () => {
    const dns = await dnsServer();
    dns.setRecord("node-b.keel.test", ["127.0.0.72"], 7);
    const result = await queryServers("node-b.keel.test", { servers: [at(dns)] });
    expect(result).toEqual({ addresses: ["127.0.0.72"], ttlSeconds: 7 });
  });

  test("returns every address sorted, with the smallest TTL", async () => {
    const dns = await dnsServer();
    dns.setRecord("multi.keel.test", ["127.0.0.80", "127.0.0.9", "127.0.0.10"], 30);
    const result = await queryServers("Multi.Keel.Test.", { servers: [at(dns)] });
    expect(result.addresses).toEqual(["127.0.0.9", "127.0.0.10", "127.0.0.80"]);
    expect(result.ttlSeconds).toBe(30);
  });

  test("follows a CNAME in the answer; the TTL is the smallest along the chain", async () => {
    const dns = await dnsServer();
    dns.setAlias("node-b.keel.test", "host-7.keel.test", 3);
    dns.setRecord("host-7.keel.test", ["127.0.0.77"], 60);
    const result = await queryServers("node-b.keel.test", { servers: [at(dns)] });
    expect(result).toEqual({ addresses: ["127.0.0.77"], ttlSeconds: 3 });
  });

  test("falls back to AAAA when a name has no A record", async () => {
    const dns = await dnsServer();
    dns.setRecord("v6.keel.test", ["::1"], 9);
    expect(await queryServers("v6.keel.test", { servers: [at(dns)] })).toEqual({
      addresses: ["::1"],
      ttlSeconds: 9,
    });
    const error = await lookupError(
      queryServers("v6.keel.test", { servers: [at(dns)], family: "ipv4" }),
    );
    expect(error.code).toBe("nodata");
  });

  test("NXDOMAIN ends the lookup at once, without asking the next server", async () => {
    const first = await dnsServer("127.0.0.61");
    const second = await dnsServer("127.0.0.62");
    const error = await lookupError(
      queryServers("gone.keel.test", { servers: [at(first), at(second)] }),
    );
    expect(error.code).toBe("nxdomain");
    expect(error.message).toBe(`${first.endpoint} answered NXDOMAIN for "gone.keel.test"`);
    expect(first.queries).toBe(1);
    expect(second.queries).toBe(0);
  });

  test("a server in outage times out after the bounded attempts", async () => {
    const dns = await dnsServer();
    dns.setRecord("node-b.keel.test", ["127.0.0.72"], 1);
    dns.setMode("outage");
    const startedAt = performance.now();
    const error = await lookupError(
      queryServers("node-b.keel.test", { servers: [at(dns)], timeoutMs: 100 }),
    );
    const elapsedMs = performance.now() - startedAt;
    expect(error.code).toBe("timeout");
    expect(error.message).toContain(`failed after 2 attempts`);
    expect(error.message).toContain(`${dns.endpoint} did not answer within 100 ms`);
    expect(dns.queries).toBe(2);
    expect(elapsedMs).toBeGreaterThanOrEqual(190);
    expect(elapsedMs).toBeLessThan(1500);
  });

  test("fails over to the next server when the first does not answer", async () => {
    const down = await dnsServer("127.0.0.61");
    const up = await dnsServer("127.0.0.62");
    down.setMode("outage");
    up.setRecord("node-b.keel.test", ["127.0.0.73"], 4);
    const result = await queryServers("node-b.keel.test", {
      servers: [at(down), at(up)],
      timeoutMs: 150,
    });
    expect(result).toEqual({ addresses: ["127.0.0.73"], ttlSeconds: 4 });
    expect(down.queries).toBe(1);
    expect(up.queries).toBe(1);
  });

  test("fails over on SERVFAIL, and reports each server when all fail", async () => {
    const broken = await dnsServer("127.0.0.61");
    broken.setMode("servfail");
    const error = await lookupError(
      queryServers("node-b.keel.test", { servers: [at(broken)], timeoutMs: 150 }),
    );
    expect(error.code).toBe("servfail");
    expect(error.message).toContain(`${broken.endpoint} answered SERVFAIL for "node-b.keel.test"`);
    expect(broken.queries).toBe(2);
  });

  test("an answer with the wrong id is ignored; the one with the query's id is used", async () => {
    // A server that first replies with a forged id and a wrong address, then correctly.
    let replies = 0;
    const rogue: udp.Socket<"buffer"> = await Bun.udpSocket({
      hostname: "127.0.0.61",
      port: 0,
      socket: {
        data(socket, data, port, address) {
          const query = decodeMessage(data);
          const reply = (id: number, ip: string) =>
            encodeMessage({
              header: { ...query.header, id, response: true, rcode: Rcode.noError },
              questions: query.questions,
              answers: [{
                name: query.questions[0]!.name,
                class: 1,
                ttlSeconds: 5,
                data: { type: "A", address: ip },
              }],
              authorities: [],
              additionals: [],
            });
          socket.send(reply((query.header.id + 1) & 0xffff, "10.6.6.6"), port, address);
          socket.send(new Uint8Array([1, 2, 3]), port, address);
          socket.send(reply(query.header.id, "127.0.0.74"), port, address);
          replies++;
        },
      },
    });
    started.push({ stop: () => rogue.close() });
    const result = await queryServers("node-b.keel.test", {
      servers: [{ host: "127.0.0.61", port: rogue.port }],
      timeoutMs: 500,
    });
    expect(result.addresses).toEqual(["127.0.0.74"]);
    expect(replies).toBe(1);
  });

  test("answers that never carry the query's id time out", async () => {
    const rogue: udp.Socket<"buffer"> = await Bun.udpSocket({
      hostname: "127.0.0.61",
      port: 0,
      socket: {
        data(socket, data, port, address) {
          const query = decodeMessage(data);
          socket.send(
            encodeMessage({
              header: { ...query.header, id: query.header.id ^ 0x5555, response: true },
              questions: query.questions,
              answers: [],
              authorities: [],
              additionals: [],
            }),
            port,
            address,
          );
        },
      },
    });
    started.push({ stop: () => rogue.close() });
    const error = await lookupError(
      queryServers("node-b.keel.test", {
        servers: [{ host: "127.0.0.61", port: rogue.port }],
        timeoutMs: 100,
        attempts: 1,
      }),
    );
    expect(error.code).toBe("timeout");
  });

  test("an aborted lookup stops at once", async () => {
    const dns = await dnsServer();
    dns.setMode("outage");
    const controller = new AbortController();
    const startedAt = performance.now();
    const pending = queryServers("node-b.keel.test", {
      servers: [at(dns)],
      timeoutMs: 5000,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    const error = await lookupError(pending);
    expect(error.code).toBe("aborted");
    expect(performance.now() - startedAt).toBeLessThan(1000);
  });

  test("createLookup goes to resolver.servers when set", async () => {
    const dns = await dnsServer();
    dns.setRecord("node-c.keel.test", ["127.0.0.75"], 2);
    const lookup = createLookup([dns.endpoint]);
    expect(await lookup("node-c.keel.test")).toEqual({ addresses: ["127.0.0.75"], ttlSeconds: 2 });
  });
});

describe("system resolver", () => {
  test("resolves localhost with no TTL", async () => {
    const result = await systemLookup("localhost");
    expect(result.ttlSeconds).toBeNull();
    expect(result.addresses.some((a) => a === "127.0.0.1" || a === "::1")).toBe(true);
  });

  test("a name that does not exist is a DnsLookupError", async () => {
    // .invalid never resolves (RFC 2606).
    const error = await lookupError(systemLookup("no-such-host.invalid"));
    expect(error.message).toContain(`"no-such-host.invalid"`);
  });
});

test("parseDnsServer reads ip:port and [ipv6]:port", () => {
  expect(parseDnsServer("127.0.0.61:5353")).toEqual({ host: "127.0.0.61", port: 5353 });
  expect(parseDnsServer("[::1]:53")).toEqual({ host: "::1", port: 53 });
  expect(() => parseDnsServer("127.0.0.61")).toThrow(RangeError);
});
