// The admin API (DESIGN §8). Every POST needs `Authorization: Bearer TOKEN`, the token of
// security.admin_token (or admin_token_file):
//
//   POST /admin/snapshot                  200 {"ok":true,"index":N,"bytes":N}
//   POST /admin/step-down [?to=NAME]      200 {"ok":true,"leader":"node-b"} once another leads
//        body (optional) {"to":"NAME"}
//   POST /admin/suspend                   200 {"ok":true,"suspended":true}
//   POST /admin/resume                    200 {"ok":true,"suspended":false}
//   POST /admin/shutdown                  202 {"ok":true,"shutting_down":true}; the node stops
//                                         after the answer is sent (a leader hands over first)
//   GET  /admin/events                    200 {"events":[...]} newest last; read-only, no token
//
// Errors are the JSON of errors.ts, { "error": { "code", "message", "leader"? } }:
//
//   code             status  when
//   unauthorized     401     no "Authorization: Bearer ..." header (with WWW-Authenticate)
//   forbidden        403     a wrong token
//   admin_disabled   403     security.admin_token is not set: admin is off
//   bad_request      400     a malformed body or query
//   unknown_member   400     step-down to a name that is not a member
//   not_leader       503     step-down on a follower; error.leader.url is the leader's base
//                            URL, so a client retries the same request there
//   no_leader        503     no leader is known (an election is under way)
//   timeout          504     step-down: no other member took over in time
//   unavailable      503     the node cannot do it now
//
// The token is compared in constant time (auth.ts).

import type { Context, Hono } from "hono";
import type { AdminResult, LeaderInfo, OpsApi } from "./api.ts";
import { bearerToken, tokensEqual } from "./auth.ts";
import { readBody } from "./body.ts";
import { type ErrorBody, errorStatus } from "./errors.ts";

/** adminBodyBytesMax bounds an admin request body (only step-down reads one). */
export const adminBodyBytesMax = 4096;
/** shutdownDelayMs leaves time for the 202 to reach the client before the node stops. */
export const shutdownDelayMs = 50;

/** AdminErrorCode is the stable code of an admin error (errors.ts's codes plus auth). */
export type AdminErrorCode =
  | "unauthorized"
  | "forbidden"
  | "admin_disabled"
  | "unknown_member"
  | "not_leader"
  | "no_leader"
  | "timeout"
  | "unavailable"
  | "bad_request";

/** adminErrorStatus is the HTTP status of each admin error code. */
export const adminErrorStatus: Record<AdminErrorCode, 400 | 401 | 403 | 503 | 504> = {
  unauthorized: 401,
  forbidden: 403,
  admin_disabled: 403,
  unknown_member: 400,
  not_leader: errorStatus.not_leader as 503,
  no_leader: errorStatus.no_leader as 503,
  timeout: errorStatus.timeout as 504,
  unavailable: errorStatus.unavailable as 503,
  bad_request: errorStatus.bad_request as 400,
};

/** AdminRoutesDeps is what the admin routes need. */
export interface AdminRoutesDeps {
  ops: OpsApi;
  /** Receives a failure of the deferred shutdown. */
  logError: (message: string, error: unknown) => void;
}

/** registerAdminRoutes adds the /admin routes to app. */
export function registerAdminRoutes(app: Hono, deps: AdminRoutesDeps): void {
  const { ops } = deps;
  let shuttingDown = false;

  // Each POST route checks the token itself (not a middleware on /admin/*), so that the
  // route label of a refused request in the HTTP metrics is still its own route.
  const post = (path: string, handler: (c: Context) => Response | Promise<Response>): void => {
    app.post(path, async (c) => {
      const refusal = authorize(ops.adminToken, c.req.header("authorization"));
      return refusal ?? await handler(c);
    });
  };

  // Read-only and as public as /status: the dashboard shows it.
  app.get("/admin/events", (c) => c.json({ events: ops.events() }));

  post("/admin/snapshot", async (c) => {
    const result = await ops.snapshotNow();
    if (!result.ok) return adminFailure(result);
    return c.json({ ok: true, index: result.index, bytes: result.bytes });
  });

  post("/admin/step-down", async (c) => {
    const to = await stepDownTarget(c);
    if (to instanceof Response) return to;
    const result = await ops.stepDown(to);
    if (!result.ok) return adminFailure(result);
    return c.json({ ok: true, leader: result.leader });
  });

  post("/admin/suspend", (c) => {
    ops.suspend();
    return c.json({ ok: true, suspended: ops.suspended() });
  });

  post("/admin/resume", (c) => {
    ops.resume();
    return c.json({ ok: true, suspended: ops.suspended() });
  });

  post("/admin/shutdown", (c) => {
    if (!shuttingDown) {
      shuttingDown = true;
      // After the answer is written: the node may stop the HTTP server as it shuts down.
      setTimeout(() => {
        ops.shutdown().catch((error: unknown) => deps.logError("Admin shutdown failed", error));
      }, shutdownDelayMs);
    }
    return c.json({ ok: true, shutting_down: true }, 202);
  });
}

/**
 * authorize answers the refusal for a request, or undefined when its bearer token is the
 * admin token.
 */
export function authorize(
  adminToken: string | undefined,
  authorization: string | undefined,
): Response | undefined {
  if (adminToken === undefined) {
    return adminError(
      "admin_disabled",
      "The admin API is disabled until security.admin_token (or security.admin_token_file) is set",
    );
  }
  const token = bearerToken(authorization);
  if (token === undefined) {
    return adminError(
      "unauthorized",
      'The admin API needs the header "Authorization: Bearer TOKEN"',
      null,
      { "www-authenticate": 'Bearer realm="keel"' },
    );
  }
  if (!tokensEqual(token, adminToken)) {
    return adminError("forbidden", "The bearer token is not the admin token");
  }
  return undefined;
}

/** stepDownTarget reads the optional target from ?to= or a JSON body {"to": NAME}. */
async function stepDownTarget(c: Context): Promise<string | undefined | Response> {
  const fromQuery = c.req.query("to");
  const body = await readBody(c.req.raw, adminBodyBytesMax);
  let fromBody: string | undefined;
  if (body.length > 0) {
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(body));
    } catch (error: unknown) {
      const reason = error instanceof Error ? error.message : String(error);
      return adminError("bad_request", `Request body is not valid JSON: ${reason}`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      return adminError(
        "bad_request",
        'Request body must be a JSON object such as {"to":"node-b"}',
      );
    }
    const to = (json as Record<string, unknown>).to;
    if (to !== undefined && to !== null && typeof to !== "string") {
      return adminError("bad_request", 'Field "to" must be a member name or null');
    }
    fromBody = to ?? undefined;
  }
  if (fromQuery !== undefined && fromBody !== undefined && fromQuery !== fromBody) {
    return adminError(
      "bad_request",
      `The query names ${JSON.stringify(fromQuery)} but the body names ${
        JSON.stringify(fromBody)
      }: give one`,
    );
  }
  const to = fromQuery ?? fromBody;
  if (to === "") return adminError("bad_request", 'Parameter "to" must not be empty');
  return to;
}

/** adminFailure turns a failed AdminResult into its error response. */
function adminFailure(result: Extract<AdminResult<object>, { ok: false }>): Response {
  return adminError(result.code, result.message, result.leader);
}

/** adminError makes the JSON error response of an admin code. */
export function adminError(
  code: AdminErrorCode,
  message: string,
  leader: LeaderInfo | null = null,
  headers: Record<string, string> = {},
): Response {
  const body: Omit<ErrorBody, "error"> & {
    error: Omit<ErrorBody["error"], "code"> & { code: AdminErrorCode };
  } = { error: { code, message } };
  if (leader !== null) body.error.leader = { name: leader.name, url: leader.httpUrl };
  return new Response(JSON.stringify(body), {
    status: adminErrorStatus[code],
    headers: { "content-type": "application/json", ...headers },
  });
}
