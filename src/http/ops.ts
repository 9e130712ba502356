// Health, readiness and metrics (DESIGN §8). Load balancers and monitoring act on these
// answers, so they must never claim more than the node knows:
//
//   GET /healthz             200 {"status":"ok","checks":[...]}         every health check ok
//                            503 {"status":"unhealthy","checks":[...]}  otherwise
//   GET /readyz              200 {"status":"ready"}                     every readiness check ok
//                            503 {"status":"not_ready","checks":[...]}  otherwise, every check listed
//       ?role=leader         adds the check "leader": this node leads (the writer pool)
//       ?verbose             lists the checks on 200 too
//   GET /metrics             Prometheus text format 0.0.4: the node's metrics, then HTTP's,
//                            then the health and readiness checks as gauges (keel_ready, ...)
//
// /readyz is never 200 unless a check named "leader_known" is present and passing, whatever
// else the node reports: a node that omitted it is answered 503 as if no leader were known.
// /readyz and /metrics carry Access-Control-Allow-Origin: * so the dashboard of one node can
// read the readiness and the counters of the others.

import type { Context, Hono } from "hono";
import type { Check, OpsApi } from "./api.ts";
import { HttpError } from "./errors.ts";
import { checkMetricsText, type HttpMetrics } from "./metrics_http.ts";

/** leaderKnownCheck names the readiness check that a leader is known and heard from. */
export const leaderKnownCheck = "leader_known";
/** leaderCheck names the check ?role=leader adds. */
export const leaderCheck = "leader";
/** The content type of the Prometheus text exposition format. */
export const metricsContentType = "text/plain; version=0.0.4; charset=utf-8";

/** OpsRoutesDeps is what the health, readiness and metrics routes need. */
export interface OpsRoutesDeps {
  ops: OpsApi;
  httpMetrics: HttpMetrics;
  /** Told when the node's readiness lacks the leader_known check (a bug in the node). */
  logError: (message: string, error: unknown) => void;
}

/** registerOpsRoutes adds /healthz, /readyz and /metrics to app. */
export function registerOpsRoutes(app: Hono, deps: OpsRoutesDeps): void {
  app.get("/healthz", (c) => {
    const checks = deps.ops.health();
    const healthy = checks.every((check) => check.ok);
    return c.json(
      { status: healthy ? "ok" : "unhealthy", checks },
      healthy ? 200 : 503,
      { "cache-control": "no-store" },
    );
  });

  app.get("/readyz", (c) => {
    const headers = { "cache-control": "no-store", "access-control-allow-origin": "*" };
    const role = c.req.query("role");
    if (role !== undefined && role !== "leader") {
      throw new HttpError(
        "bad_request",
        `Query parameter role must be "leader", not ${JSON.stringify(role)}`,
      );
    }
    const checks = readinessChecks(deps, role === "leader");
    const ready = checks.every((check) => check.ok);
    if (!ready) return c.json({ status: "not_ready", checks }, 503, headers);
    return c.json(
      isVerbose(c) ? { status: "ready", checks } : { status: "ready" },
      200,
      headers,
    );
  });

  app.get("/metrics", (c) => {
    const node = deps.ops.metricsText();
    const text = (node === "" || node.endsWith("\n") ? node : `${node}\n`) +
      deps.httpMetrics.render() +
      checkMetricsText(deps.ops.health(), readinessChecks(deps, false));
    // Open to any origin, like /status and /readyz: the dashboard of one member charts the
    // counters of every member (nothing here is secret; /metrics needs no token).
    return c.body(text, 200, {
      "content-type": metricsContentType,
      "cache-control": "no-store",
      "access-control-allow-origin": "*",
    });
  });
}

/**
 * readinessChecks is the node's readiness, made safe: a missing leader_known check is
 * added as failing, so no answer is ever 200 without it; withLeader adds the leader check.
 */
export function readinessChecks(deps: OpsRoutesDeps, withLeader: boolean): Check[] {
  const checks = [...deps.ops.readiness()];
  if (!checks.some((check) => check.name === leaderKnownCheck)) {
    deps.logError(
      `Readiness has no "${leaderKnownCheck}" check; answering 503`,
      new Error(`checks were ${checks.map((check) => check.name).join(", ")}`),
    );
    checks.unshift({
      name: leaderKnownCheck,
      ok: false,
      detail: "the node reported no leader_known check, so no leader is assumed",
    });
  }
  if (withLeader) {
    const leading = deps.ops.isLeader();
    checks.push({
      name: leaderCheck,
      ok: leading,
      detail: leading ? "this node is the leader" : "this node is not the leader",
    });
  }
  return checks;
}

/** isVerbose: `?verbose`, `?verbose=1` and `?verbose=true` ask for the checks on 200. */
function isVerbose(c: Context): boolean {
  const verbose = c.req.query("verbose");
  return verbose !== undefined && verbose !== "0" && verbose !== "false";
}
