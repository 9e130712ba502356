// The HTTP server that carries the app: node:http (or node:https), adapted to fetch's
// Request and Response, because Bun.serve loses pipelined requests.
//
// Why not Bun.serve (Bun 1.4.5): when a second request arrives on a keep-alive connection
// while the answer to the first is still pending (an async handler: every write waits for
// its commit, every linearizable read for its barrier), its uWS core closes the socket
// outright. The first request's handler sees an abort and its answer is dropped, the second
// is never dispatched, yet the first write is applied: the client is told nothing of a write
// that happened. A bare Bun.serve whose handler awaits one setImmediate shows it with two
// pipelined GETs; upstream: oven-sh/bun pulls #32868, #33664, #35036, #38128 (none in
// 1.4.5). Bun's node:http holds a pipelined request until the answer ahead of it is
// written, as HTTP/1.1 requires, so keel serves through it, at a cost per request
// (docs/performance.md). Once a Bun release answers pipelined requests, Bun.serve can come
// back: a canary in test/http/server.test.ts fails then.

import { Buffer } from "node:buffer";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { errorResponse } from "./errors.ts";

/** ServeOptions say where and how to serve fetch. */
export interface ServeOptions {
  hostname: string;
  port: number;
  /** PEM certificate and key: HTTPS when given. */
  tls?: { cert: string; key: string } | undefined;
  fetch: (request: Request) => Response | Promise<Response>;
  /**
   * error answers when fetch throws or rejects (for keel, only a broken invariant, which
   * the app rethrows: error exits the process).
   */
  error: (error: unknown) => Response | Promise<Response>;
  /** A connection idle this long is closed, between requests as inside one. */
  idleTimeoutSeconds: number;
  /**
   * A body beyond this is answered 413 (in the app's words) without reading it (declared)
   * or as soon as it is exceeded (chunked): bodies are read whole before fetch sees them.
   */
  maxRequestBodyBytes: number;
  /** Receives an error of the listening socket itself (e.g. EMFILE on accept). */
  onServerError?: (error: unknown) => void;
}

/** HttpServer is a listening server. */
export interface HttpServer {
  /** The port it listens on (the one asked for, or the one chosen for port 0). */
  readonly port: number;
  /** stop closes the listener and every connection, idle or not. */
  stop(): Promise<void>;
}

/** serveHttp listens and serves; it rejects when it cannot listen (EADDRINUSE, EACCES). */
export async function serveHttp(options: ServeOptions): Promise<HttpServer> {
  const scheme = options.tls === undefined ? "http" : "https";
  // A failure to write an answer (the client is gone) ends that connection, nothing more.
  const handler = (req: IncomingMessage, res: ServerResponse) =>
    void handle(options, scheme, req, res).catch(() => res.destroy());
  const server: Server = options.tls === undefined
    ? createHttpServer(handler)
    : createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, handler);
  // Bun.serve's idleTimeout covered a connection between requests too: keep it so, or a
  // client's pooled connection (a follower forwarding to the leader) meets a closed socket.
  server.keepAliveTimeout = options.idleTimeoutSeconds * 1000;
  server.timeout = options.idleTimeoutSeconds * 1000;
  // CONNECT never reaches the request handler: answer it as the app answers any method it
  // does not serve.
  server.on("connect", (_req: IncomingMessage, socket: Duplex) => {
    void answerConnect(options, scheme, socket).catch(() => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error: unknown) => options.onServerError?.(error));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(
  options: ServeOptions,
  scheme: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > options.maxRequestBodyBytes) {
    res.shouldKeepAlive = false;
    await send(res, bodyTooLarge("", declared, options.maxRequestBodyBytes));
    return;
  }
  // The client went away before its answer was written: the handler's signal says so.
  const aborted = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) aborted.abort();
  });
  const method = req.method ?? "GET";
  let body: Uint8Array | ReadableStream<Uint8Array> | undefined;
  if (method !== "GET" && method !== "HEAD") {
    // Read here, in node's own terms (a fetch stream over it costs more than the rest of
    // a small write); a body cut off by the client is an aborted stream for the app.
    const read = await readAll(req, options.maxRequestBodyBytes);
    if (read === "too-large") {
      res.shouldKeepAlive = false;
      await send(
        res,
        bodyTooLarge("at least ", options.maxRequestBodyBytes + 1, options.maxRequestBodyBytes),
      );
      return;
    }
    body = read === "aborted" ? abortedStream() : read;
  }
  const request = toRequest(options, scheme, req, method, body, aborted.signal);
  let response: Response;
  if (request instanceof Response) {
    response = request;
  } else {
    try {
      response = await options.fetch(request);
    } catch (error: unknown) {
      response = await options.error(error);
    }
  }
  await send(res, response);
}

/** toRequest is the fetch Request of a node request, or the answer when it cannot be one. */
function toRequest(
  options: ServeOptions,
  scheme: string,
  req: IncomingMessage,
  method: string,
  body: Uint8Array | ReadableStream<Uint8Array> | undefined,
  signal: AbortSignal,
): Request | Response {
  const target = req.url ?? "/";
  const host = req.headers.host ?? `${options.hostname}:${options.port}`;
  const url = target.startsWith("/") ? `${scheme}://${host}${target}` : target;
  try {
    return new Request(url, {
      method,
      headers: req.headers as Record<string, string>,
      signal,
      ...(body === undefined ? {} : { body, duplex: "half" }),
    } as RequestInit);
  } catch (error: unknown) {
    // A Host header or request target no URL can be made of.
    const reason = error instanceof Error ? error.message : String(error);
    return errorResponse("bad_request", `Request target ${JSON.stringify(target)}: ${reason}`);
  }
}

/** readAll reads a whole request body of at most maxBytes. */
function readAll(
  req: IncomingMessage,
  maxBytes: number,
): Promise<Uint8Array | "too-large" | "aborted"> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    req.on("data", (chunk: Buffer) => {
      total += chunk.length;
      if (total > maxBytes) {
        req.removeAllListeners("data");
        req.resume();
        resolve("too-large");
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => {
      const body = chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks, total);
      resolve(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
    });
    req.once("aborted", () => resolve("aborted"));
    req.once("error", () => resolve("aborted"));
    req.once("close", () => {
      if (!req.complete) resolve("aborted");
    });
  });
}

/** abortedStream is the body of a request the client cut off: reading it fails as in Bun. */
function abortedStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({
    pull(controller) {
      controller.error(new DOMException("The connection was closed.", "AbortError"));
    },
  });
}

function bodyTooLarge(qualifier: string, bytes: number | string, maxBytes: number): Response {
  return errorResponse(
    "payload_too_large",
    `Request body of ${qualifier}${bytes} bytes exceeds the maximum of ${maxBytes} bytes`,
  );
}

/** send writes a fetch Response as the node response. */
async function send(res: ServerResponse, response: Response): Promise<void> {
  let body: Uint8Array | undefined;
  try {
    body = response.body === null ? undefined : new Uint8Array(await response.arrayBuffer());
  } catch {
    // A body that fails to produce itself: nothing sensible can follow the status.
    res.destroy();
    return;
  }
  if (res.destroyed) return;
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  if (body !== undefined) headers["content-length"] = String(body.length);
  res.writeHead(response.status, headers);
  res.end(body);
}

/** answerConnect answers a CONNECT on its raw socket with the app's answer, then closes. */
async function answerConnect(options: ServeOptions, scheme: string, socket: Duplex): Promise<void> {
  let response: Response;
  try {
    response = await options.fetch(
      new Request(`${scheme}://${options.hostname}:${options.port}/`, { method: "CONNECT" }),
    );
  } catch (error: unknown) {
    response = await options.error(error);
  }
  const body = new Uint8Array(await response.arrayBuffer());
  const reason = STATUS_CODES[response.status] ?? "Unknown";
  const lines = [`HTTP/1.1 ${response.status} ${reason}`];
  response.headers.forEach((value, name) => void lines.push(`${name}: ${value}`));
  lines.push(`content-length: ${body.length}`, "connection: close", "", "");
  (socket as Socket).end(Buffer.concat([Buffer.from(lines.join("\r\n")), body]));
}
