// The HTTP app: client API and status, with JSON errors everywhere. It sees the node only
// through NodeApi, so it is tested through app.request() with a fake node.

import { Hono } from "hono";
import { AssertionError } from "../lib/assert.ts";
import type { KvService } from "../service/kv.ts";
import type { NodeApi } from "./api.ts";
import { type FetchLike, forwardTimeoutMsDefault, registerClientApi } from "./client_api.ts";
import { errorResponse, HttpError } from "./errors.ts";

/** AppDeps is what createApp needs. */
export interface AppDeps {
  node: NodeApi;
  kv: KvService;
  /** Largest request body accepted (config http.bodyBytesMax). */
  bodyBytesMax: number;
  /** Used to forward writes to the leader; defaults to the global fetch. */
  fetchLeader?: FetchLike;
  /** Bound on a forwarded write (config http.requestTimeoutMs is a good value). */
  forwardTimeoutMs?: number;
  /** Receives unexpected errors before the 500 answer; defaults to console.error. */
  logError?: (message: string, error: unknown) => void;
}

/** createApp builds the client-facing HTTP app. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const logError = deps.logError ??
    ((message: string, error: unknown) => console.error(message, error));

  registerClientApi(app, {
    node: deps.node,
    kv: deps.kv,
    bodyBytesMax: deps.bodyBytesMax,
    fetchLeader: deps.fetchLeader ?? ((input, init) => fetch(input, init)),
    forwardTimeoutMs: deps.forwardTimeoutMs ?? forwardTimeoutMsDefault,
  });

  app.get("/status", (c) => c.json(deps.node.status() as object));

  app.notFound((c) =>
    errorResponse("not_found", `No route for ${c.req.method} ${new URL(c.req.url).pathname}`)
  );

  app.onError((error, c) => {
    if (error instanceof HttpError) return error.toResponse();
    // A broken invariant is a bug: it is never caught, here neither.
    if (error instanceof AssertionError) throw error;
    logError(`Unexpected error in ${c.req.method} ${new URL(c.req.url).pathname}`, error);
    return errorResponse("internal", "Internal server error");
  });

  return app;
}
