// Looking names up: either straight from the DNS servers of `resolver.servers` over UDP
// (which gives the records' TTLs), or through the system resolver (getaddrinfo: hosts
// file, nsswitch, no TTL).
//
// A UDP answer is accepted only from the server the query went to, with the query's
// random id and question; anything else arriving on the socket is ignored (a stale or
// spoofed datagram cannot substitute an address). Each attempt has a timeout; a timeout,
// SERVFAIL, REFUSED or malformed answer moves on to the next server, for a bounded number
// of attempts. NXDOMAIN is an answer, not a failure of the server: it ends the lookup.

import type { udp } from "bun";
import { lookup as systemGetAddrInfo } from "node:dns/promises";
import { isIPv6 } from "node:net";
import {
  decodeMessage,
  type DnsMessage,
  DnsWireError,
  encodeQuery,
  namesEqual,
  normalizeName,
  Rcode,
  rcodeName,
  RecordType,
} from "./dns_wire.ts";

/** dnsQueryTimeoutMs is how long one attempt waits for a server's answer by default. */
export const dnsQueryTimeoutMs = 800;
/** dnsAttemptsMin: a lookup tries at least this many times, cycling through the servers. */
export const dnsAttemptsMin = 2;
/** dnsCnameHopsMax bounds the CNAME chain followed inside one answer. */
export const dnsCnameHopsMax = 8;
/** dnsIgnoredDatagramsMax: past this many unrelated datagrams an attempt gives up. */
export const dnsIgnoredDatagramsMax = 64;

/** LookupResult is the addresses a name has now, and how long they may be cached. */
export interface LookupResult {
  addresses: string[];
  /** The smallest TTL among the records used; null through the system resolver. */
  ttlSeconds: number | null;
}

/** Lookup resolves one host name. The signal, when given, abandons the lookup. */
export type Lookup = (host: string, signal?: AbortSignal) => Promise<LookupResult>;

export type DnsLookupErrorCode =
  | "nxdomain"
  | "nodata"
  | "timeout"
  | "servfail"
  | "refused"
  | "bad-response"
  | "network"
  | "aborted";

/** DnsLookupError is a lookup that produced no address; `code` says why. */
export class DnsLookupError extends Error {
  override name = "DnsLookupError";
  readonly code: DnsLookupErrorCode;

  constructor(code: DnsLookupErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** DnsServer is the address of one DNS server. */
export interface DnsServer {
  host: string;
  port: number;
}

/** parseDnsServer reads "ip:port" or "[ipv6]:port", the form of `resolver.servers`. */
export function parseDnsServer(text: string): DnsServer {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (match === null || port < 1 || port > 65535) {
    throw new RangeError(`DNS server must be "ip:port", got "${text}"`);
  }
  return { host: match[1] ?? match[2]!, port };
}

/** formatDnsServer writes a server as "ip:port", IPv6 in brackets. */
export function formatDnsServer(server: DnsServer): string {
  return server.host.includes(":")
    ? `[${server.host}]:${server.port}`
    : `${server.host}:${server.port}`;
}

export type AddressFamily = "ipv4" | "ipv6" | "any";

export interface QueryServersOptions {
  servers: readonly DnsServer[];
  /** Per attempt. Default dnsQueryTimeoutMs. */
  timeoutMs?: number;
  /** Total attempts, cycling through the servers in order. Default max(servers, 2). */
  attempts?: number;
  /** "any" (default) asks for A records, then AAAA when the name has no A record. */
  family?: AddressFamily;
  signal?: AbortSignal;
  /** randomId returns a query id in [0, 65535]; crypto-random by default. */
  randomId?: () => number;
}

function cryptoRandomId(): number {
  return crypto.getRandomValues(new Uint16Array(1))[0]!;
}

/**
 * queryServers resolves `name` by asking the given DNS servers directly. Resolves with
 * the sorted, de-duplicated addresses and their smallest TTL; rejects with DnsLookupError.
 */
export async function queryServers(
  name: string,
  options: QueryServersOptions,
): Promise<LookupResult> {
  if (options.servers.length === 0) throw new RangeError("queryServers needs at least one server");
  const family = options.family ?? "any";
  if (family === "ipv6") return await queryType(name, RecordType.AAAA, options);
  try {
    return await queryType(name, RecordType.A, options);
  } catch (error: unknown) {
    if (family === "any" && error instanceof DnsLookupError && error.code === "nodata") {
      try {
        return await queryType(name, RecordType.AAAA, options);
      } catch (second: unknown) {
        if (second instanceof DnsLookupError && second.code === "nodata") {
          throw new DnsLookupError("nodata", `"${normalizeName(name)}" has no A or AAAA records`);
        }
        throw second;
      }
    }
    throw error;
  }
}

type AttemptOutcome =
  | { ok: true; result: LookupResult }
  | { ok: false; final: boolean; error: DnsLookupError };

async function queryType(
  name: string,
  type: number,
  options: QueryServersOptions,
): Promise<LookupResult> {
  const servers = options.servers;
  const attempts = options.attempts ?? Math.max(servers.length, dnsAttemptsMin);
  const timeoutMs = options.timeoutMs ?? dnsQueryTimeoutMs;
  const randomId = options.randomId ?? cryptoRandomId;
  const typeName = type === RecordType.AAAA ? "AAAA" : "A";
  const failures: string[] = [];
  let lastError: DnsLookupError | undefined;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const server = servers[attempt % servers.length]!;
    const outcome = await attemptQuery(name, type, server, timeoutMs, randomId(), options.signal);
    if (outcome.ok) return outcome.result;
    if (outcome.final) throw outcome.error;
    lastError = outcome.error;
    failures.push(outcome.error.message);
  }
  throw new DnsLookupError(
    lastError?.code ?? "timeout",
    `Lookup of ${typeName} records for "${
      normalizeName(name)
    }" failed after ${attempts} attempts: ${failures.join("; ")}`,
  );
}

async function attemptQuery(
  name: string,
  type: number,
  server: DnsServer,
  timeoutMs: number,
  id: number,
  signal: AbortSignal | undefined,
): Promise<AttemptOutcome> {
  const where = formatDnsServer(server);
  const shown = normalizeName(name);
  let answer: DnsMessage;
  try {
    answer = await exchange(
      encodeQuery(id, name, type),
      server,
      timeoutMs,
      signal,
      (message) =>
        message.header.id === id &&
        message.header.response &&
        message.questions.length === 1 &&
        namesEqual(message.questions[0]!.name, name) &&
        message.questions[0]!.type === type,
    );
  } catch (error: unknown) {
    if (error instanceof DnsLookupError) {
      return { ok: false, final: error.code === "aborted", error };
    }
    throw error;
  }
  const rcode = answer.header.rcode;
  if (rcode === Rcode.nameError) {
    return {
      ok: false,
      final: true,
      error: new DnsLookupError("nxdomain", `${where} answered NXDOMAIN for "${shown}"`),
    };
  }
  if (rcode !== Rcode.noError) {
    return {
      ok: false,
      final: false,
      error: new DnsLookupError(
        rcode === Rcode.refused ? "refused" : "servfail",
        `${where} answered ${rcodeName(rcode)} for "${shown}"`,
      ),
    };
  }
  const result = addressesFromAnswer(answer, name, type);
  if (result.addresses.length > 0) return { ok: true, result };
  if (answer.header.truncated) {
    return {
      ok: false,
      final: false,
      error: new DnsLookupError(
        "bad-response",
        `${where} sent a truncated answer for "${shown}" with no address (TCP is not supported)`,
      ),
    };
  }
  const typeName = type === RecordType.AAAA ? "AAAA" : "A";
  return {
    ok: false,
    final: true,
    error: new DnsLookupError("nodata", `${where} has no ${typeName} records for "${shown}"`),
  };
}

/**
 * addressesFromAnswer collects the addresses of `name`, following a CNAME chain inside
 * the answer section. The TTL is the smallest of every record used, CNAMEs included.
 */
export function addressesFromAnswer(message: DnsMessage, name: string, type: number): LookupResult {
  let target = name;
  let ttlSeconds = Number.POSITIVE_INFINITY;
  for (let hop = 0; hop <= dnsCnameHopsMax; hop++) {
    const addresses = new Set<string>();
    for (const record of message.answers) {
      if (!namesEqual(record.name, target)) continue;
      const data = record.data;
      if (
        (type === RecordType.A && data.type === "A") ||
        (type === RecordType.AAAA && data.type === "AAAA")
      ) {
        addresses.add(data.address);
        ttlSeconds = Math.min(ttlSeconds, record.ttlSeconds);
      }
    }
    if (addresses.size > 0) {
      return { addresses: [...addresses].sort(compareAddresses), ttlSeconds };
    }
    const alias = message.answers.find((record) =>
      namesEqual(record.name, target) && record.data.type === "CNAME"
    );
    if (alias === undefined || alias.data.type !== "CNAME") break;
    ttlSeconds = Math.min(ttlSeconds, alias.ttlSeconds);
    target = alias.data.target;
  }
  return { addresses: [], ttlSeconds: null };
}

/**
 * exchange sends one query from a fresh socket (a fresh random source port) and waits for
 * the first datagram from the server that decodes and passes `accept`. The socket is
 * closed whatever happens.
 */
async function exchange(
  query: Uint8Array,
  server: DnsServer,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  accept: (message: DnsMessage) => boolean,
): Promise<DnsMessage> {
  const where = formatDnsServer(server);
  const abandoned = () => new DnsLookupError("aborted", `Lookup through ${where} was abandoned`);
  if (signal?.aborted) throw abandoned();
  // Datagrams go to whatever handler the pending exchange installed.
  let onDatagram: (data: Uint8Array, port: number, address: string) => void = () => {};
  let onSocketError: (error: Error) => void = () => {};
  let socket: udp.Socket<"buffer">;
  try {
    socket = await Bun.udpSocket({
      hostname: isIPv6(server.host) ? "::" : "0.0.0.0",
      port: 0,
      socket: {
        data: (_socket, data, port, address) => onDatagram(data, port, address),
        error: (_socket, error) => onSocketError(error),
      },
    });
  } catch (error: unknown) {
    throw new DnsLookupError(
      "network",
      `Cannot open a UDP socket for ${where}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<DnsMessage>((resolve, reject) => {
      let ignored = 0;
      let lastDecodeError: string | undefined;
      timer = setTimeout(() => {
        reject(
          lastDecodeError === undefined
            ? new DnsLookupError("timeout", `${where} did not answer within ${timeoutMs} ms`)
            : new DnsLookupError(
              "bad-response",
              `${where} sent a malformed answer: ${lastDecodeError}`,
            ),
        );
      }, timeoutMs);
      onAbort = () => reject(abandoned());
      signal?.addEventListener("abort", onAbort, { once: true });
      onSocketError = (error) =>
        reject(new DnsLookupError("network", `Socket error talking to ${where}: ${error.message}`));
      onDatagram = (data, port, address) => {
        if (port !== server.port || !sameAddress(address, server.host)) return;
        try {
          const message = decodeMessage(data);
          if (accept(message)) {
            resolve(message);
            return;
          }
        } catch (error: unknown) {
          if (!(error instanceof DnsWireError)) throw error;
          lastDecodeError = error.message;
        }
        ignored++;
        if (ignored > dnsIgnoredDatagramsMax) {
          reject(
            new DnsLookupError(
              "bad-response",
              `${where} sent more than ${dnsIgnoredDatagramsMax} datagrams that do not answer the query`,
            ),
          );
        }
      };
      // send() returning false means the kernel buffer was full; the attempt then times out.
      socket.send(query, server.port, server.host);
    });
  } finally {
    onDatagram = () => {};
    onSocketError = () => {};
    if (timer !== undefined) clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    socket.close();
  }
}

function sameAddress(received: string, expected: string): boolean {
  if (received === expected) return true;
  // An IPv4 server answering an IPv6 socket shows as an IPv4-mapped address.
  return received.toLowerCase() === `::ffff:${expected}`.toLowerCase() ||
    received.toLowerCase() === expected.toLowerCase();
}

/**
 * systemLookup resolves through the system resolver (getaddrinfo). It gives no TTL, and
 * it cannot be abandoned: the signal is ignored, the caller bounds the wait.
 */
export async function systemLookup(host: string): Promise<LookupResult> {
  try {
    const entries = await systemGetAddrInfo(host, { all: true });
    const addresses = [...new Set(entries.map((entry) => entry.address))].sort(compareAddresses);
    if (addresses.length === 0) {
      throw new DnsLookupError("nodata", `The system resolver has no address for "${host}"`);
    }
    return { addresses, ttlSeconds: null };
  } catch (error: unknown) {
    if (error instanceof DnsLookupError) throw error;
    const code = typeof error === "object" && error !== null && "code" in error
      ? String((error as { code: unknown }).code)
      : "";
    const reason = error instanceof Error ? error.message : String(error);
    const mapped: DnsLookupErrorCode = code === "ENOTFOUND"
      ? "nxdomain"
      : code === "ENODATA"
      ? "nodata"
      : code === "ETIMEOUT" || code === "EAI_AGAIN"
      ? "timeout"
      : "network";
    throw new DnsLookupError(mapped, `The system resolver cannot resolve "${host}": ${reason}`);
  }
}

export interface CreateLookupOptions {
  timeoutMs?: number;
  family?: AddressFamily;
}

/**
 * createLookup is the production Lookup: straight to `servers` ("ip:port" strings, from
 * resolver.servers) when there are any, else the system resolver.
 */
export function createLookup(
  servers: readonly string[],
  options: CreateLookupOptions = {},
): Lookup {
  if (servers.length === 0) return (host) => systemLookup(host);
  const parsed = servers.map(parseDnsServer);
  return (host, signal) =>
    queryServers(host, {
      servers: parsed,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.family === undefined ? {} : { family: options.family }),
      ...(signal === undefined ? {} : { signal }),
    });
}

/**
 * compareAddresses orders addresses deterministically: IPv4 before IPv6, IPv4 by value
 * (127.0.0.9 before 127.0.0.10), others by text.
 */
export function compareAddresses(a: string, b: string): number {
  const va = ipv4Value(a);
  const vb = ipv4Value(b);
  if (va !== undefined && vb !== undefined) return va - vb;
  if (va !== undefined) return -1;
  if (vb !== undefined) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function ipv4Value(text: string): number | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (match === null) return undefined;
  let value = 0;
  for (let i = 1; i <= 4; i++) value = value * 256 + Number(match[i]);
  return value;
}
