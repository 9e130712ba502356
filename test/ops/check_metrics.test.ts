// /metrics carries what /healthz and /readyz answer, check by check (keel_healthy,
// keel_ready, keel_health_check{check}, keel_readiness_check{check}): the alerting rules in
// deploy/prometheus/ read them. Through app.request() with a fake node.

import { expect, test } from "bun:test";
import { createApp } from "../../src/http/app.ts";
import { FakeNode, FakeOps } from "../http/ops_fake.ts";
import { parseExposition, sampleValue } from "../support/prometheus.ts";

async function scrape(ops: FakeOps) {
  const node = new FakeNode("node-a");
  const app = createApp({ node, kv: node.kv, bodyBytesMax: 1024, ops });
  const response = await app.request("/metrics");
  expect(response.status).toBe(200);
  return parseExposition(await response.text());
}

test("a healthy, ready member reads keel_healthy 1, keel_ready 1 and every check 1", async () => {
  const ops = new FakeOps();
  const families = await scrape(ops);
  expect(sampleValue(families, "keel_healthy")).toBe(1);
  expect(sampleValue(families, "keel_ready")).toBe(1);
  for (const check of ops.readinessChecks) {
    expect(sampleValue(families, "keel_readiness_check", { check: check.name })).toBe(1);
  }
  expect(sampleValue(families, "keel_health_check", { check: "storage_writable" })).toBe(1);
});

test("a fenced member reads keel_ready 0 and not_fenced 0; storage failing reads unhealthy", async () => {
  const ops = new FakeOps();
  ops.readinessChecks = ops.readinessChecks.map((check) =>
    check.name === "not_fenced" ? { ...check, ok: false, detail: "replaced" } : check
  );
  ops.healthChecks = [{ name: "storage_writable", ok: false, detail: "disk I/O error" }];
  const families = await scrape(ops);
  expect(sampleValue(families, "keel_ready")).toBe(0);
  expect(sampleValue(families, "keel_readiness_check", { check: "not_fenced" })).toBe(0);
  expect(sampleValue(families, "keel_readiness_check", { check: "leader_known" })).toBe(1);
  expect(sampleValue(families, "keel_healthy")).toBe(0);
  expect(sampleValue(families, "keel_health_check", { check: "storage_writable" })).toBe(0);
});

test("readiness without leader_known reads not ready, as /readyz answers 503", async () => {
  const ops = new FakeOps();
  ops.readinessChecks = ops.readinessChecks.filter((check) => check.name !== "leader_known");
  const families = await scrape(ops);
  expect(sampleValue(families, "keel_ready")).toBe(0);
  expect(sampleValue(families, "keel_readiness_check", { check: "leader_known" })).toBe(0);
});
