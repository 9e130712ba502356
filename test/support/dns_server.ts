// TestDnsServer: a small authoritative DNS server over UDP on a loopback address, for
// tests that need real DNS (the resolver tests, the host-replacement drills). Records
// live in a mutable in-memory table; the server can be told to stop answering (outage)
// or to answer SERVFAIL, and answers NXDOMAIN for names it does not hold.
//
//   const dns = await TestDnsServer.start({ hostname: "127.0.0.61" });
//   dns.setRecord("node-b.keel.test", ["127.0.0.72"], 1);
//   config: resolver.servers: [dns.endpoint]      // "127.0.0.61:PORT"
//   dns.setMode("outage");  ...  dns.setMode("normal");
//   dns.stop();

import type { udp } from "bun";
import {
  decodeMessage,
  type DnsMessage,
  type DnsRecord,
  DnsWireError,
  encodeMessage,
  normalizeName,
  parseIPv4,
  Rcode,
  RecordClass,
  RecordType,
} from "../../src/resolver/dns_wire.ts";

/** Mode: "normal" answers; "outage" drops every query; "servfail" answers SERVFAIL. */
export type DnsServerMode = "normal" | "outage" | "servfail";

export interface TestDnsServerOptions {
  /** A loopback address, e.g. "127.0.0.61". */
  hostname: string;
  /** 0 (default) picks a free port; read it back from `port`. */
  port?: number;
}

interface Entry {
  addresses: string[];
  ttlSeconds: number;
}

export class TestDnsServer {
  readonly hostname: string;
  readonly port: number;
  readonly #socket: udp.Socket<"buffer">;
  readonly #records = new Map<string, Entry>();
  readonly #aliases = new Map<string, { target: string; ttlSeconds: number }>();
  #mode: DnsServerMode = "normal";
  /** Replies dropped because the asker's port was gone (ECONNREFUSED). */
  repliesDropped = 0;
  /** Queries received, answered or not. */
  queries = 0;
  /** The names asked for, in order (lower case), for assertions. */
  readonly asked: string[] = [];

  private constructor(socket: udp.Socket<"buffer">) {
    this.#socket = socket;
    this.hostname = socket.hostname;
    this.port = socket.port;
  }

  static async start(options: TestDnsServerOptions): Promise<TestDnsServer> {
    // The socket exists before the server object; queries wait for both.
    const holder: { server?: TestDnsServer } = {};
    const socket = await Bun.udpSocket({
      hostname: options.hostname,
      port: options.port ?? 0,
      socket: {
        data: (sock, data, port, address) => {
          if (holder.server !== undefined) holder.server.#onQuery(sock, data, port, address);
        },
      },
    });
    holder.server = new TestDnsServer(socket);
    return holder.server;
  }

  /** endpoint is "host:port", the form resolver.servers takes. */
  get endpoint(): string {
    return `${this.hostname}:${this.port}`;
  }

  /** setRecord replaces a name's addresses (A for IPv4, AAAA for IPv6) and their TTL. */
  setRecord(name: string, addresses: readonly string[], ttlSeconds = 1): void {
    this.#records.set(key(name), { addresses: [...addresses], ttlSeconds });
  }

  /** setAlias makes `name` a CNAME for `target`. */
  setAlias(name: string, target: string, ttlSeconds = 1): void {
    this.#aliases.set(key(name), { target, ttlSeconds });
  }

  /** deleteRecord removes a name: it then gets NXDOMAIN. */
  deleteRecord(name: string): void {
    this.#records.delete(key(name));
    this.#aliases.delete(key(name));
  }

  setMode(mode: DnsServerMode): void {
    this.#mode = mode;
  }

  stop(): void {
    this.#socket.close();
  }

  #onQuery(socket: udp.Socket<"buffer">, data: Uint8Array, port: number, address: string): void {
    this.queries++;
    let query: DnsMessage;
    try {
      query = decodeMessage(data);
    } catch (error: unknown) {
      if (error instanceof DnsWireError) return; // Garbage gets no answer.
      throw error;
    }
    const question = query.questions[0];
    if (query.header.response || question === undefined) return;
    this.asked.push(key(question.name));
    if (this.#mode === "outage") return;
    const answers: DnsRecord[] = [];
    let rcode: number = Rcode.noError;
    if (this.#mode === "servfail") {
      rcode = Rcode.serverFailure;
    } else {
      let name = question.name;
      const alias = this.#aliases.get(key(name));
      if (alias !== undefined) {
        answers.push({
          name,
          class: RecordClass.IN,
          ttlSeconds: alias.ttlSeconds,
          data: { type: "CNAME", target: alias.target },
        });
        name = alias.target;
      }
      const entry = this.#records.get(key(name));
      if (entry === undefined && alias === undefined) {
        rcode = Rcode.nameError;
      } else if (entry !== undefined) {
        for (const addr of entry.addresses) {
          const v4 = parseIPv4(addr) !== undefined;
          if (question.type === RecordType.A && v4) {
            answers.push({
              name,
              class: RecordClass.IN,
              ttlSeconds: entry.ttlSeconds,
              data: { type: "A", address: addr },
            });
          } else if (question.type === RecordType.AAAA && !v4) {
            answers.push({
              name,
              class: RecordClass.IN,
              ttlSeconds: entry.ttlSeconds,
              data: { type: "AAAA", address: addr },
            });
          }
        }
      }
    }
    const reply = encodeMessage({
      header: {
        id: query.header.id,
        response: true,
        opcode: query.header.opcode,
        authoritative: true,
        truncated: false,
        recursionDesired: query.header.recursionDesired,
        recursionAvailable: false,
        rcode,
      },
      questions: [question],
      answers,
      authorities: [],
      additionals: [],
    });
    try {
      socket.send(reply, port, address);
    } catch (error: unknown) {
      // The asker went away (a node killed by a test): its port answers ICMP unreachable,
      // which Bun raises as ECONNREFUSED on a later send. A DNS server drops the reply.
      if (!(error instanceof Error && /ECONNREFUSED|EHOSTUNREACH/.test(error.message))) {
        throw error;
      }
      this.repliesDropped++;
    }
  }
}

function key(name: string): string {
  return normalizeName(name).toLowerCase();
}
