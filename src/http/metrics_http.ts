// Metrics of the HTTP layer itself: requests by route, method and code, and their latency.
// The route label is the matched route pattern ("/v1/kv/:key"), never the raw path, and
// methods outside a fixed list read "other", so the series stay few whatever clients send.

import type { Context, MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { type Counter, type Histogram, type Labels, Registry, seriesMax } from "../lib/metrics.ts";

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
