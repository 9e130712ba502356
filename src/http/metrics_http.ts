// Metrics of the HTTP layer itself: requests by route, method and code, and their latency.
// The route label is the matched route pattern ("/v1/kv/:key"), never the raw path, and
// methods outside a fixed list read "other", so the series stay few whatever clients send.
// And the answers of /healthz and /readyz as gauges, check by check, so that alerting
// rules see what a load balancer sees (deploy/prometheus/keel-rules.yml).

import type { Context, MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { type Counter, type Histogram, type Labels, Registry, seriesMax } from "../lib/metrics.ts";
import type { Check } from "./api.ts";

/** unmatchedRoute is the route label of requests that matched no route (404). */
export const unmatchedRoute = "(unmatched)";

const knownMethods = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

/** HttpMetrics records every request the app answers; see httpMetricsMiddleware. */
export class HttpMetrics {
  readonly registry: Registry;
  readonly requests: Counter;
  readonly duration: Histogram;
  /** The label objects of each (route, method, code) seen, reused so their keys are cached. */
  readonly #labels = new Map<string, { requests: Labels; duration: Labels }>();

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    this.requests = registry.counter(
      "keel_http_requests_total",
      "HTTP requests answered, by matched route pattern, method and status code",
    );
    this.duration = registry.histogram(
      "keel_http_request_duration_seconds",
      "Time to answer an HTTP request (until the handler returns its response), by route and status code",
    );
  }

  record(route: string, method: string, code: number, seconds: number): void {
    const methodLabel = knownMethods.has(method) ? method : "other";
    const key = `${route} ${methodLabel} ${code}`;
    let labels = this.#labels.get(key);
    if (labels === undefined) {
      // Few: routes are patterns, methods a fixed list, codes the ones keel answers with.
      const codeLabel = String(code);
      labels = {
        requests: Object.freeze({ route, method: methodLabel, code: codeLabel }),
        duration: Object.freeze({ route, code: codeLabel }),
      };
      if (this.#labels.size < seriesMax) this.#labels.set(key, labels);
    }
    this.requests.inc(labels.requests);
    this.duration.observe(seconds, labels.duration);
  }

  /** render is the exposition of the HTTP metrics alone. */
  render(): string {
    return this.registry.render();
  }
}

/**
 * httpMetricsMiddleware measures each request. Register it first, on "*": it then wraps
 * every route and the not-found handler, and after next() the route index points at the
 * handler that answered.
 */
export function httpMetricsMiddleware(metrics: HttpMetrics): MiddlewareHandler {
  const middleware: MiddlewareHandler = async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const seconds = (performance.now() - started) / 1000;
      // A thrown error reaches the app's onError inside next(), so c.res is its answer; only
      // a rethrown broken invariant leaves c.res unset, and that crashes the process anyway.
      metrics.record(matchedRoute(c), c.req.method, c.res.status, seconds);
    }
  };
  return middleware;
}

/** matchedRoute is the pattern of the route that answered, or unmatchedRoute. */
function matchedRoute(c: Context): string {
  const path = routePath(c);
  // Only this middleware, registered on "*", matched: the answer came from notFound.
  if (path === "*" || path === "/*" || path === "") return unmatchedRoute;
  // A parameter's pattern is no part of its label: "/v1/kv/:key{.+}" reads "/v1/kv/:key".
  return path.replace(/\{[^}]*\}/g, "");
}

/**
 * checkMetricsText renders the health and readiness checks of one scrape: keel_healthy and
 * keel_ready are 1 exactly when /healthz and /readyz answer 200, and keel_health_check and
 * keel_readiness_check are 1 per passing check (0 failing), labelled by its name
 * (storage_writable, leader_known, not_fenced, ...). A registry per scrape: the checks are
 * a handful and their set can change (a check added by a newer keel).
 */
export function checkMetricsText(health: readonly Check[], readiness: readonly Check[]): string {
  const registry = new Registry();
  const every = (checks: readonly Check[]) => checks.every((check) => check.ok) ? 1 : 0;
  const each = (checks: readonly Check[]): Array<[Labels, number]> =>
    checks.map((check) => [{ check: check.name }, check.ok ? 1 : 0]);
  registry.gauge(
    "keel_healthy",
    "1 when every health check passes (GET /healthz answers 200)",
    () => [[{}, every(health)]],
  );
  registry.gauge(
    "keel_health_check",
    "1 when the health check named by the label passes",
    () => each(health),
  );
  registry.gauge(
    "keel_ready",
    "1 when every readiness check passes (GET /readyz answers 200)",
    () => [[{}, every(readiness)]],
  );
  registry.gauge(
    "keel_readiness_check",
    "1 when the readiness check named by the label passes (not_fenced 0: this host was replaced)",
    () => each(readiness),
  );
  return registry.render();
}
