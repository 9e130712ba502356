// The HTTP app: client API, status, health, readiness, metrics, admin and the dashboard,
// with JSON errors everywhere. It sees the node only through NodeApi and OpsApi, so it is
// tested through app.request() with a fake node.

import { type Context, Hono } from "hono";
import { AssertionError } from "../lib/assert.ts";
import type { KvService } from "../service/kv.ts";
import type { Service } from "../service/service.ts";
import { registerAdminRoutes } from "./admin.ts";
import type { NodeApi, OpsApi } from "./api.ts";
import { BodyAbortedError } from "./body.ts";
import {
  type ClientApiDeps,
  type FetchLike,
  forwardTimeoutMsDefault,
  registerClientApi,
} from "./client_api.ts";
import { registerCommandApi } from "./command_api.ts";
import { registerDashboard } from "./dashboard/dashboard.ts";
import { errorResponse, HttpError } from "./errors.ts";
import { HttpMetrics, httpMetricsMiddleware } from "./metrics_http.ts";
import { registerOpsRoutes } from "./ops.ts";

/** AppDeps is what createApp needs. */
export interface AppDeps {
  node: NodeApi;
  /** The kv service, for the /v1/kv routes; undefined when the node runs another service. */
  kv?: KvService | undefined;
  /**
   * The user's service (not the sessions wrapper), for POST /v1/command and /v1/query in
   * its codec; without it those routes are absent.
   */
  service?: Pick<Service, "codec" | "query"> | undefined;
  /** Largest request body accepted (config http.bodyBytesMax). */
  bodyBytesMax: number;
  /** Used to forward writes to the leader; defaults to the global fetch. */
  fetchLeader?: FetchLike;
  /** Bound on a forwarded write (config http.requestTimeoutMs is a good value). */
  forwardTimeoutMs?: number;
  /** Receives unexpected errors before the 500 answer; defaults to console.error. */
  logError?: (message: string, error: unknown) => void;
  /**
   * Receives what clients do that is worth a line but is no fault of the node (a request
   * body abandoned halfway), at most one line a minute per kind; by default nothing is
   * logged. `suppressed` in the fields counts the occurrences left out since the last line.
   */
  logInfo?: (message: string, fields: Record<string, unknown>) => void;
  /** Milliseconds for rate-limiting logInfo; performance.now by default (tests inject one). */
  clock?: () => number;
  /**
   * The operator surface: /healthz, /readyz, /metrics, /admin/* and the dashboard at /.
   * Without it those routes are absent (404), which load balancers read as not ready.
   */
  ops?: OpsApi;
  /** Where request counts and latencies are recorded; a fresh registry by default. */
  httpMetrics?: HttpMetrics;
  /** security.client_token: when set, the client API (/v1/*) needs it as a bearer token. */
  clientToken?: string | undefined;
}

/** createApp builds the client-facing HTTP app. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const logError = deps.logError ??
    ((message: string, error: unknown) => console.error(message, error));
  const httpMetrics = deps.httpMetrics ?? new HttpMetrics();

  const logAbandoned = rateLimited(
    deps.logInfo ?? (() => {}),
    deps.clock ?? (() => performance.now()),
    clientLogIntervalMs,
  );

  // First, so that it wraps every route, the not-found handler and errors.
  app.use("*", httpMetricsMiddleware(httpMetrics));
  // Before anything reads the URL: a CONNECT's is an authority ("host:port"), no URL at all.
  app.use("*", async (c, next) => {
    if (servedMethods.includes(c.req.method)) return await next();
    return errorResponse(
      "not_implemented",
      `Method ${JSON.stringify(c.req.method)} is not served here; keel serves ${
        servedMethods.join(", ")
      }`,
      { headers: { allow: servedMethods.join(", ") } },
    );
  });

  const client: ClientApiDeps = {
    node: deps.node,
    kv: deps.kv,
    bodyBytesMax: deps.bodyBytesMax,
    fetchLeader: deps.fetchLeader ?? ((input, init) => fetch(input, init)),
    forwardTimeoutMs: deps.forwardTimeoutMs ?? forwardTimeoutMsDefault,
    clientToken: deps.clientToken,
  };
  registerClientApi(app, client);
  if (deps.service !== undefined) registerCommandApi(app, { ...client, service: deps.service });

  // Readable from any origin: the dashboard served by one member reads all the others.
  app.get(
    "/status",
    (c) => c.json(deps.node.status() as object, 200, { "access-control-allow-origin": "*" }),
  );

  if (deps.ops !== undefined) {
    registerOpsRoutes(app, { ops: deps.ops, httpMetrics, logError });
    registerAdminRoutes(app, { ops: deps.ops, logError });
    registerDashboard(app);
  }

  app.notFound((c) => errorResponse("not_found", `No route for ${c.req.method} ${pathOf(c)}`));

  app.onError((error, c) => {
    if (error instanceof BodyAbortedError) {
      logAbandoned(`A client closed the connection before sending the whole request body`, {
        method: c.req.method,
        path: pathOf(c),
      });
      return error.toResponse();
    }
    if (error instanceof HttpError) return error.toResponse();
    // A broken invariant is a bug: it is never caught, here neither.
    if (error instanceof AssertionError) throw error;
    logError(`Unexpected error in ${c.req.method} ${pathOf(c)}`, error);
    return errorResponse("internal", "Internal server error");
  });

  return app;
}

/** servedMethods are the methods of keel's routes; any other is 501 not_implemented. */
const servedMethods = ["GET", "HEAD", "POST", "PUT", "DELETE"];

/** clientLogIntervalMs spaces the lines about what clients do (logInfo). */
export const clientLogIntervalMs = 60_000;

/** pathOf is the request's path for a message; it never throws, whatever the URL. */
function pathOf(c: Context): string {
  try {
    return new URL(c.req.url).pathname;
  } catch {
    return c.req.url;
  }
}

/**
 * rateLimited logs the first call, then at most one call per intervalMs; a line after a
 * quiet spell says how many calls were left out (`suppressed`).
 */
function rateLimited(
  log: (message: string, fields: Record<string, unknown>) => void,
  clock: () => number,
  intervalMs: number,
): (message: string, fields: Record<string, unknown>) => void {
  let lastMs: number | undefined;
  let suppressed = 0;
  return (message, fields) => {
    const now = clock();
    if (lastMs !== undefined && now - lastMs < intervalMs) {
      suppressed++;
      return;
    }
    log(message, suppressed === 0 ? fields : { ...fields, suppressed });
    lastMs = now;
    suppressed = 0;
  };
}
