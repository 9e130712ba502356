// The operator surface through app.request(): /healthz, /readyz, /metrics and /admin/*,
// with a fake node. The same routes against a real cluster: test/e2e/ops.test.ts.

import { describe, expect, test } from "bun:test";
import type { Hono } from "hono";
import { shutdownDelayMs } from "../../src/http/admin.ts";
import { tokensEqual } from "../../src/http/auth.ts";
import { createApp } from "../../src/http/app.ts";
import { HttpMetrics, unmatchedRoute } from "../../src/http/metrics_http.ts";
import { metricsContentType } from "../../src/http/ops.ts";
import {
  ExpositionError,
  family,
  histogramSeries,
  parseExposition,
  sampleValue,
} from "../support/prometheus.ts";
import { failing, FakeNode, FakeOps, leaderInfo, passing } from "./ops_fake.ts";

interface Setup {
  ops: FakeOps;
  app: Hono;
  errors: string[];
}

function setup(): Setup {
  const ops = new FakeOps();
  const errors: string[] = [];
  const node = new FakeNode("node-a");
  const app = createApp({
    node,
    kv: node.kv,
    bodyBytesMax: 1024 * 1024,
    ops,
    logError: (message) => errors.push(message),
  });
  return { ops, app, errors };
}

interface CheckJson {
  name: string;
  ok: boolean;
  detail: string;
}

describe("GET /healthz", () => {
  test("is 200 with every check listed when all pass", async () => {
    const { app } = setup();
    const response = await app.request("/healthz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: "ok",
      checks: [{ name: "storage_writable", ok: true, detail: "storage_writable is fine" }],
    });
  });

  test("is 503 with the same shape when a check fails", async () => {
    const { app, ops } = setup();
    ops.healthChecks = [passing("process"), failing("storage_writable")];
    const response = await app.request("/healthz");
    expect(response.status).toBe(503);
    const body = await response.json() as { status: string; checks: CheckJson[] };
    expect(body.status).toBe("unhealthy");
    expect(body.checks.map((check) => [check.name, check.ok])).toEqual([
      ["process", true],
      ["storage_writable", false],
    ]);
  });
});

describe("GET /readyz", () => {
  test("is 503 listing every check, failing ones included, when one fails", async () => {
    const { app, ops } = setup();
    ops.readinessChecks = [failing("leader_known"), passing("not_fenced")];
    const response = await app.request("/readyz");
    expect(response.status).toBe(503);
    const body = await response.json() as { status: string; checks: CheckJson[] };
    expect(body.status).toBe("not_ready");
    expect(body.checks).toEqual([
      { name: "leader_known", ok: false, detail: "leader_known is broken" },
      { name: "not_fenced", ok: true, detail: "not_fenced is fine" },
    ]);
  });

  test("is 503 when any single check fails, whichever it is", async () => {
    for (const broken of ["applied_caught_up", "not_recovering", "not_fenced", "leader_known"]) {
      const { app, ops } = setup();
      ops.readinessChecks = ops.readinessChecks.map((check) =>
        check.name === broken ? failing(broken) : check
      );
      const response = await app.request("/readyz");
      expect({ broken, status: response.status }).toEqual({ broken, status: 503 });
    }
  });

  test("is 200 only when every check passes, with a short body", async () => {
    const { app } = setup();
    const response = await app.request("/readyz");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ready" });
  });

  test("?verbose lists the checks on 200 too", async () => {
    const { app } = setup();
    for (const query of ["?verbose", "?verbose=1", "?verbose=true"]) {
      const response = await app.request(`/readyz${query}`);
      expect(response.status).toBe(200);
      const body = await response.json() as { status: string; checks: CheckJson[] };
      expect(body.checks.map((check) => check.name)).toEqual([
        "leader_known",
        "applied_caught_up",
        "not_recovering",
        "not_fenced",
        "storage_writable",
      ]);
    }
  });

  test("is never 200 when the node reports no leader_known check", async () => {
    const { app, ops, errors } = setup();
    ops.readinessChecks = [passing("not_fenced"), passing("storage_writable")];
    const response = await app.request("/readyz?verbose");
    expect(response.status).toBe(503);
    const body = await response.json() as { checks: CheckJson[] };
    expect(body.checks[0]).toMatchObject({ name: "leader_known", ok: false });
    expect(errors).toEqual([`Readiness has no "leader_known" check; answering 503`]);
  });

  test("?role=leader is 200 on the leader and lists the leader check", async () => {
    const { app } = setup();
    const response = await app.request("/readyz?role=leader&verbose");
    expect(response.status).toBe(200);
    const body = await response.json() as { checks: CheckJson[] };
    expect(body.checks.at(-1)).toEqual({
      name: "leader",
      ok: true,
      detail: "this node is the leader",
    });
  });

  test("?role=leader is 503 on a ready follower", async () => {
    const { app, ops } = setup();
    ops.leading = false;
    expect((await app.request("/readyz")).status).toBe(200);
    const response = await app.request("/readyz?role=leader");
    expect(response.status).toBe(503);
    const body = await response.json() as { checks: CheckJson[] };
    expect(body.checks.filter((check) => !check.ok).map((check) => check.name)).toEqual([
      "leader",
    ]);
  });

  test("?role=leader is 503 on a leader that is not otherwise ready", async () => {
    const { app, ops } = setup();
    ops.readinessChecks = [passing("leader_known"), failing("storage_writable")];
    expect((await app.request("/readyz?role=leader")).status).toBe(503);
  });

  test("an unknown role is a 400", async () => {
    const { app } = setup();
    const response = await app.request("/readyz?role=follower");
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: "bad_request" } });
  });

  test("/readyz and /status may be read from another origin (the dashboard)", async () => {
    const { app, ops } = setup();
    expect((await app.request("/readyz")).headers.get("access-control-allow-origin")).toBe("*");
    ops.readinessChecks = [];
    expect((await app.request("/readyz")).headers.get("access-control-allow-origin")).toBe("*");
    expect((await app.request("/status")).headers.get("access-control-allow-origin")).toBe("*");
  });
});

describe("admin", () => {
  const token = "s3cret-token";
  const endpoints = [
    { path: "/admin/snapshot", call: "snapshot", status: 200 },
    { path: "/admin/step-down", call: "step-down", status: 200 },
    { path: "/admin/suspend", call: "suspend", status: 200 },
    { path: "/admin/resume", call: "resume", status: 200 },
    { path: "/admin/shutdown", call: "shutdown", status: 202 },
  ];

  for (const endpoint of endpoints) {
    test(`POST ${endpoint.path} without a token is 401 with WWW-Authenticate`, async () => {
      const { app, ops } = setup();
      for (const authorization of [undefined, "Basic dXNlcjpwYXNz", "Bearer", "s3cret-token"]) {
        const headers: Record<string, string> = authorization === undefined
          ? {}
          : { authorization };
        const response = await app.request(endpoint.path, { method: "POST", headers });
        expect({ authorization, status: response.status }).toEqual({ authorization, status: 401 });
        expect(response.headers.get("www-authenticate")).toBe('Bearer realm="keel"');
        expect(await response.json()).toMatchObject({ error: { code: "unauthorized" } });
      }
      expect(ops.calls).toEqual([]);
    });

    test(`POST ${endpoint.path} with a wrong token is 403`, async () => {
      const { app, ops } = setup();
      for (const wrong of ["s3cret-tokem", "s3cret-token-and-more", "s", "S3CRET-TOKEN"]) {
        const response = await app.request(endpoint.path, {
          method: "POST",
          headers: { authorization: `Bearer ${wrong}` },
        });
        expect({ wrong, status: response.status }).toEqual({ wrong, status: 403 });
        expect(await response.json()).toMatchObject({ error: { code: "forbidden" } });
      }
      expect(ops.calls).toEqual([]);
    });

    test(`POST ${endpoint.path} is 403 admin_disabled without a configured token`, async () => {
      const { app, ops } = setup();
      ops.adminToken = undefined;
      const response = await app.request(endpoint.path, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
      });
      expect(response.status).toBe(403);
      const body = await response.json() as { error: { code: string; message: string } };
      expect(body.error.code).toBe("admin_disabled");
      expect(body.error.message).toContain("security.admin_token");
      expect(ops.calls).toEqual([]);
    });

    test(`POST ${endpoint.path} with the token does it`, async () => {
      const { app, ops } = setup();
      const response = await app.request(endpoint.path, {
        method: "POST",
        headers: { authorization: `bearer  ${token}` },
      });
      expect(response.status).toBe(endpoint.status);
      if (endpoint.call === "shutdown") {
        // The answer goes out first; the node stops after it.
        expect(ops.calls).toEqual([]);
        await Bun.sleep(shutdownDelayMs + 50);
      }
      expect(ops.calls).toEqual([endpoint.call]);
    });
  }

  const admin = (app: Hono, path: string, init: RequestInit = {}): Promise<Response> =>
    Promise.resolve(
      app.request(path, {
        method: "POST",
        ...init,
        headers: { authorization: `Bearer ${token}`, ...init.headers },
      }),
    );

  test("snapshot answers the index and size", async () => {
    const { app } = setup();
    const response = await admin(app, "/admin/snapshot");
    expect(await response.json()).toEqual({ ok: true, index: 42, bytes: 1234 });
  });

  test("step-down takes its target from ?to= or a JSON body", async () => {
    const { app, ops } = setup();
    expect((await admin(app, "/admin/step-down")).status).toBe(200);
    expect((await admin(app, "/admin/step-down?to=node-c")).status).toBe(200);
    const withBody = await admin(app, "/admin/step-down", {
      body: JSON.stringify({ to: "node-b" }),
      headers: { "content-type": "application/json" },
    });
    expect(withBody.status).toBe(200);
    expect(await withBody.json()).toEqual({ ok: true, leader: "node-c" });
    const both = await admin(app, "/admin/step-down?to=node-b", {
      body: JSON.stringify({ to: "node-b" }),
    });
    expect(both.status).toBe(200);
    expect(ops.stepDownTargets).toEqual([undefined, "node-c", "node-b", "node-b"]);
  });

  test("step-down refuses a malformed or contradictory target", async () => {
    const { app, ops } = setup();
    const cases: [string, string | undefined][] = [
      ["/admin/step-down", "{"],
      ["/admin/step-down", "[1]"],
      ["/admin/step-down", JSON.stringify({ to: 3 })],
      ["/admin/step-down?to=node-b", JSON.stringify({ to: "node-c" })],
      ["/admin/step-down?to=", undefined],
      ["/admin/step-down", "x".repeat(5000)],
    ];
    for (const [path, body] of cases) {
      const response = await admin(app, path, body === undefined ? {} : { body });
      expect({ path, body: body?.slice(0, 20), status: response.status }).toEqual({
        path,
        body: body?.slice(0, 20),
        status: body?.length === 5000 ? 413 : 400,
      });
    }
    expect(ops.calls).toEqual([]);
  });

  test("step-down on a follower is 503 not_leader with the leader's URL to retry at", async () => {
    const { app, ops } = setup();
    ops.stepDownResult = {
      ok: false,
      code: "not_leader",
      message: "node-a is not the leader",
      leader: leaderInfo,
    };
    const response = await admin(app, "/admin/step-down");
    expect(response.status).toBe(503);
    expect(await response.json()).toEqual({
      error: {
        code: "not_leader",
        message: "node-a is not the leader",
        leader: { name: "node-b", url: "http://127.0.0.12:7080" },
      },
    });
  });

  test("every admin failure code maps to its stable status", async () => {
    const expected = {
      not_leader: 503,
      no_leader: 503,
      unknown_member: 400,
      timeout: 504,
      unavailable: 503,
      bad_request: 400,
    } as const;
    for (const [code, status] of Object.entries(expected)) {
      const { app, ops } = setup();
      ops.snapshotResult = {
        ok: false,
        code: code as keyof typeof expected,
        message: `failed with ${code}`,
        leader: null,
      };
      const response = await admin(app, "/admin/snapshot");
      expect({ code, status: response.status }).toEqual({ code, status });
      expect(await response.json()).toEqual({ error: { code, message: `failed with ${code}` } });
    }
  });

  test("suspend and resume report the state", async () => {
    const { app, ops } = setup();
    expect(await (await admin(app, "/admin/suspend")).json()).toEqual({
      ok: true,
      suspended: true,
    });
    expect(ops.suspended()).toBe(true);
    expect(await (await admin(app, "/admin/resume")).json()).toEqual({
      ok: true,
      suspended: false,
    });
  });

  test("a second shutdown request does not shut down twice", async () => {
    const { app, ops } = setup();
    expect((await admin(app, "/admin/shutdown")).status).toBe(202);
    expect((await admin(app, "/admin/shutdown")).status).toBe(202);
    await Bun.sleep(shutdownDelayMs + 50);
    expect(ops.calls).toEqual(["shutdown"]);
  });

  test("GET /admin/events needs no token and lists the node's events", async () => {
    const { app } = setup();
    const response = await app.request("/admin/events");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      events: [{ at: 1_700_000_000_000, kind: "leader-changed", message: "x" }],
    });
  });

  test("GET on an admin action is not a way around the token", async () => {
    const { app, ops } = setup();
    expect((await app.request("/admin/shutdown")).status).toBe(404);
    expect(ops.calls).toEqual([]);
  });

  test("tokensEqual compares whole tokens", () => {
    expect(tokensEqual("abc", "abc")).toBe(true);
    expect(tokensEqual("abc", "abd")).toBe(false);
    expect(tokensEqual("abc", "abcd")).toBe(false);
    expect(tokensEqual("", "abc")).toBe(false);
  });
});

describe("GET /metrics", () => {
  test("is the node's metrics and the HTTP metrics, in valid text format", async () => {
    const { app } = setup();
    const put = await app.request("/v1/kv/alpha", { method: "PUT", body: "1" });
    expect(put.status).toBe(200);
    await app.request("/v1/kv/beta", { method: "PUT", body: "2" });
    await app.request("/v1/kv/alpha");
    await app.request("/v1/kv/missing");
    await app.request("/no/such/route");
    await app.request("/readyz");

    const response = await app.request("/metrics");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe(metricsContentType);
    const families = parseExposition(await response.text());

    // What the fake node reports comes through unchanged.
    expect(family(families, "keel_term").type).toBe("gauge");
    expect(sampleValue(families, "keel_term")).toBe(7);
    expect(sampleValue(families, "keel_proposals_total")).toBe(3);

    const requests = family(families, "keel_http_requests_total");
    expect(requests.type).toBe("counter");
    const count = (labels: Record<string, string>): number | undefined =>
      sampleValue(families, "keel_http_requests_total", labels);
    expect(count({ route: "/v1/kv/:key", method: "PUT", code: "200" })).toBe(2);
    expect(count({ route: "/v1/kv/:key", method: "GET", code: "200" })).toBe(1);
    expect(count({ route: "/v1/kv/:key", method: "GET", code: "404" })).toBe(1);
    expect(count({ route: unmatchedRoute, method: "GET", code: "404" })).toBe(1);
    expect(count({ route: "/readyz", method: "GET", code: "200" })).toBe(1);
    // The raw path never becomes a label value.
    const routes = new Set(requests.samples.map((sample) => sample.labels.route));
    expect([...routes].sort()).toEqual(["(unmatched)", "/readyz", "/v1/kv/:key"]);

    const duration = family(families, "keel_http_request_duration_seconds");
    expect(duration.type).toBe("histogram");
    const series = histogramSeries(duration);
    const puts = series.find((s) => s.labels.route === "/v1/kv/:key" && s.labels.code === "200");
    expect(puts?.count).toBe(3);
    expect(Object.keys(puts?.labels ?? {}).sort()).toEqual(["code", "route"]);
  });

  test("refused admin requests are counted under their own route", async () => {
    const { app } = setup();
    await app.request("/admin/snapshot", { method: "POST" });
    const families = parseExposition(await (await app.request("/metrics")).text());
    expect(
      sampleValue(families, "keel_http_requests_total", {
        route: "/admin/snapshot",
        method: "POST",
        code: "401",
      }),
    ).toBe(1);
  });

  test("odd methods are counted as other", async () => {
    const metrics = new HttpMetrics();
    metrics.record("/x", "PROPFIND", 404, 0.001);
    const families = parseExposition(metrics.render());
    expect(sampleValue(families, "keel_http_requests_total", { method: "other" })).toBe(1);
  });

  test("a node exposition without a final newline still yields valid text", async () => {
    const ops = new FakeOps();
    ops.metricsText = () => "# TYPE keel_term gauge\nkeel_term 3";
    const app = createApp({
      node: new FakeNode("a"),
      kv: new FakeNode("a").kv,
      bodyBytesMax: 10,
      ops,
    });
    const families = parseExposition(await (await app.request("/metrics")).text());
    expect(sampleValue(families, "keel_term")).toBe(3);
  });

  test("the parser is strict: it refuses what Prometheus would refuse", () => {
    expect(() => parseExposition("keel_term 1")).toThrow(ExpositionError);
    expect(() => parseExposition("keel_term abc\n")).toThrow(/invalid value/);
    expect(() => parseExposition('keel_x{a="\\t"} 1\n')).toThrow(/invalid escape/);
  });
});

describe("without ops", () => {
  test("the operator routes are absent, so a load balancer reads not ready", async () => {
    const app = createApp({ node: new FakeNode("a"), kv: new FakeNode("a").kv, bodyBytesMax: 10 });
    expect((await app.request("/readyz")).status).toBe(404);
    expect((await app.request("/healthz")).status).toBe(404);
  });
});
