// GET / serves the dashboard: one self-contained page. Its behaviour in a real browser
// against a real cluster is test/e2e/dashboard.test.ts.

import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { createApp } from "../../src/http/app.ts";
import { dashboardHtml } from "../../src/http/dashboard/dashboard.ts";
import { FakeNode, FakeOps } from "./ops_fake.ts";

function app() {
  const node = new FakeNode("node-a");
  return createApp({ node, kv: node.kv, bodyBytesMax: 1024, ops: new FakeOps() });
}

test("GET / is the dashboard page", async () => {
  const response = await app().request("/");
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toBe("text/html; charset=UTF-8");
  const html = await response.text();
  expect(html).toBe(dashboardHtml);
  for (const id of ["leader", "member-rows", "recovery", "recovery-none", "events"]) {
    expect(html).toContain(`id="${id}"`);
  }
});

test("the page loads nothing from elsewhere: no src, href, url() or @import", () => {
  expect(dashboardHtml).not.toMatch(/\s(src|href)\s*=/i);
  expect(dashboardHtml).not.toMatch(/url\(|@import/i);
  expect(dashboardHtml).toContain('<html lang="en">');
});

test("the Content-Security-Policy allows exactly the inline script and style", async () => {
  const response = await app().request("/");
  const policy = response.headers.get("content-security-policy") ?? "";
  const hash = (tag: string): string => {
    const body = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(dashboardHtml)?.[1];
    expect(body).toBeDefined();
    return `'sha256-${createHash("sha256").update(body ?? "").digest("base64")}'`;
  };
  expect(policy).toContain(`script-src ${hash("script")}`);
  expect(policy).toContain(`style-src ${hash("style")}`);
  expect(policy).toContain("default-src 'none'");
  expect(policy).toContain("connect-src *");
  expect(response.headers.get("x-content-type-options")).toBe("nosniff");
});

test("the page sets what it shows with textContent, never innerHTML", () => {
  expect(dashboardHtml).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
});
