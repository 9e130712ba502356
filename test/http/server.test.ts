// The HTTP server (src/http/server.ts) on real loopback sockets, with the app and a node
// that answers later, as a real one does (a write waits for its commit).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { LeaderInfo, NodeApi, ReadBarrierResult, SubmitResult } from "../../src/http/api.ts";
import { createApp } from "../../src/http/app.ts";
import { type HttpServer, serveHttp } from "../../src/http/server.ts";
import { KvService } from "../../src/service/kv.ts";
import {
  encodeEnvelope,
  type SessionKey,
  SessionService,
  unwrapResult,
} from "../../src/service/sessions.ts";
import { statusView } from "../support/status_view.ts";

/** LaterNode applies a write on a later turn of the event loop, like a commit. */
class LaterNode implements NodeApi {
  readonly name = "node-a";
  readonly kv = new KvService();
  readonly sessions = new SessionService(this.kv);
  index = 0;

  async submit(command: Uint8Array, session: SessionKey | undefined): Promise<SubmitResult> {
    await new Promise((resolve) => setTimeout(resolve, 5));
    this.index++;
    const result = this.sessions.apply(encodeEnvelope(session, command), {
      index: this.index,
      term: 1,
    });
    return unwrapResult(result, this.index);
  }

  async readBarrier(): Promise<ReadBarrierResult> {
    await new Promise((resolve) => setTimeout(resolve, 5));
    return { ok: true };
  }

  leader(): LeaderInfo | null {
    return { name: this.name, httpUrl: "http://self" };
  }

  status() {
    return statusView({ name: this.name, role: "leader", commitIndex: this.index });
  }
}

const bodyBytesMax = 1024;
let node: LaterNode;
let server: HttpServer;
const errors: unknown[] = [];
const fetchErrors: unknown[] = [];

beforeAll(async () => {
  node = new LaterNode();
  const app = createApp({
    node,
    kv: node.kv,
    bodyBytesMax,
    logError: (_message, error) => errors.push(error),
  });
  server = await serveHttp({
    hostname: "127.0.0.1",
    port: 0,
    fetch: app.fetch,
    error: (error) => {
      fetchErrors.push(error);
      return new Response("internal", { status: 500 });
    },
    idleTimeoutSeconds: 10,
    maxRequestBodyBytes: bodyBytesMax,
  });
});

afterAll(async () => {
  await server.stop();
});

/** exchange writes `request` on a fresh connection and returns all it gets until closed. */
async function exchange(request: string, options: { endAfterMs?: number } = {}): Promise<string> {
  let answer = "";
  await new Promise<void>((resolve, reject) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port: server.port,
      socket: {
        open: (socket) => {
          socket.write(request);
          if (options.endAfterMs !== undefined) setTimeout(() => socket.end(), options.endAfterMs);
        },
        data: (_socket, data) => void (answer += new TextDecoder().decode(data)),
        close: () => resolve(),
        error: (_socket, error) => reject(error),
      },
    }).catch(reject);
  });
  return answer;
}

const statusLines = (answer: string) => answer.match(/HTTP\/1\.1 \d{3} [^\r]*/g) ?? [];

describe("serveHttp", () => {
  test("pipelined writes behind a pending answer each get their answer, in order", async () => {
    const answer = await exchange(
      "PUT /v1/kv/pp-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na" +
        "PUT /v1/kv/pp-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb" +
        "GET /v1/kv/pp-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    expect(statusLines(answer)).toEqual(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]);
    const first = answer.indexOf('{"index"');
    const second = answer.indexOf('{"index"', first + 1);
    expect(answer.slice(first, first + 11)).toBe('{"index":1}');
    expect(answer.slice(second, second + 11)).toBe('{"index":2}');
    expect(answer.endsWith("\r\n\r\na")).toBe(true); // the GET's value, last
    expect(node.kv.get("pp-2")?.value).toEqual(new TextEncoder().encode("b"));
  });

  test("a fetch request is the client's: method, path, query, headers and body", async () => {
    const response = await fetch(`http://127.0.0.1:${server.port}/v1/kv/a/b%2Fc?redirect=false`, {
      method: "PUT",
      body: "value",
      headers: { "idempotency-key": "srv:1" },
    });
    expect(response.status).toBe(200);
    expect(node.kv.get("a/b/c")?.value).toEqual(new TextEncoder().encode("value"));
    expect(node.sessions.lastApplied("srv")?.seq).toBe(1);
    const read = await fetch(`http://127.0.0.1:${server.port}/v1/kv/a/b%2Fc`);
    expect(read.headers.get("keel-mod-index")).toBe(String(node.kv.get("a/b/c")?.modIndex));
    expect(await read.text()).toBe("value");
  });

  test("CONNECT is 501 not_implemented, as the app answers it", async () => {
    const answer = await exchange(
      "CONNECT 127.0.0.1:7080 HTTP/1.1\r\nHost: 127.0.0.1:7080\r\n\r\n",
    );
    expect(statusLines(answer)).toEqual(["HTTP/1.1 501 Not Implemented"]);
    expect(answer).toContain('"code":"not_implemented"');
  });

  test("a body over the maximum is 413 whether declared or chunked", async () => {
    const declared = await exchange(
      `PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: ${bodyBytesMax + 1}\r\n\r\n`,
    );
    expect(statusLines(declared)).toEqual(["HTTP/1.1 413 Payload Too Large"]);
    expect(declared).toContain('"code":"payload_too_large"');
    const chunk = "x".repeat(bodyBytesMax + 1);
    const chunked = await exchange(
      `PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
    );
    expect(statusLines(chunked)).toEqual(["HTTP/1.1 413 Payload Too Large"]);
    expect(node.kv.get("big")).toBeUndefined();
  });

  test("a body the client abandons is no error and applies nothing", async () => {
    const before = node.index;
    await exchange("PUT /v1/kv/gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", {
      endAfterMs: 50,
    });
    await Bun.sleep(50);
    expect(node.index).toBe(before);
    expect(errors).toEqual([]);
    expect(fetchErrors).toEqual([]);
  });

  test("why: Bun.serve still closes a connection whose request is pipelined behind a pending one", async () => {
    // A canary for server.ts's reason to exist. When it fails, the Bun in use answers
    // pipelined requests, and Bun.serve (faster) can carry the app again.
    const bare = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch() {
        await new Promise((resolve) => setImmediate(resolve));
        return new Response("ok");
      },
    });
    try {
      let answer = "";
      await new Promise<void>((resolve, reject) => {
        Bun.connect({
          hostname: "127.0.0.1",
          port: bare.port as number,
          socket: {
            open: (socket) =>
              void socket.write(
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
              ),
            data: (_socket, data) => void (answer += new TextDecoder().decode(data)),
            close: () => resolve(),
            error: (_socket, error) => reject(error),
          },
        }).catch(reject);
      });
      expect(answer).toBe("");
    } finally {
      await bare.stop(true);
    }
  });

  test("stop closes idle keep-alive connections too", async () => {
    const other = await serveHttp({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => new Response("ok"),
      error: () => new Response("internal", { status: 500 }),
      idleTimeoutSeconds: 60,
      maxRequestBodyBytes: 16,
    });
    let closed = false;
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: other.port,
      socket: { data: () => {}, close: () => void (closed = true) },
    });
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await Bun.sleep(50);
    await other.stop();
    await Bun.sleep(50);
    expect(closed).toBe(true);
  });
});
