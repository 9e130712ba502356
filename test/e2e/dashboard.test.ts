// End-to-end: the dashboard at GET / in real headless Chromium (Debian's /usr/bin/chromium
// driven by playwright-core), served by a member of a real 3-node cluster on
// 127.0.0.41-43. The page must show the three members and the leader, follow a change of
// leader within a few seconds, chart writes, reads, commit and apply rates that move under
// load, and show a killed member as down; it leaves a screenshot in
// test-results/dashboard.png.
//
// Without /usr/bin/chromium this test fails (install it: apt-get install -y chromium),
// unless KEEL_SKIP_BROWSER=1, which skips it and says why.

import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { createApp } from "../../src/http/app.ts";
import { TestCluster } from "../support/cluster.ts";
import { FakeNode, FakeOps } from "../http/ops_fake.ts";
import { memberView, statusView } from "../support/status_view.ts";

// The functions given to page.waitForFunction run in the browser. This project's
// tsconfig has no DOM types, so the little they use is declared here, for this module only.
interface BrowserElement {
  dataset: Record<string, string | undefined>;
  textContent: string | null;
  getAttribute(name: string): string | null;
}
declare const document: {
  getElementById(id: string): BrowserElement | null;
  querySelector(selector: string): BrowserElement | null;
  querySelectorAll(selector: string): ArrayLike<BrowserElement>;
};

const chromiumPath = "/usr/bin/chromium";
const adminToken = "e2e-dashboard-admin-token";
const skipBrowser = process.env.KEEL_SKIP_BROWSER === "1";
const title = "the dashboard shows the members and the leader, and follows a step-down";

let cluster: TestCluster | undefined;
let context: BrowserContext | undefined;
let profileDir: string | undefined;

afterAll(async () => {
  await context?.close().catch(() => {});
  if (profileDir !== undefined) rmSync(profileDir, { recursive: true, force: true });
  await cluster?.stop();
});

if (skipBrowser) {
  test.skip(`${title} (skipped: KEEL_SKIP_BROWSER=1)`, () => {});
  test.skip("the dashboard shows recovery progress (skipped: KEEL_SKIP_BROWSER=1)", () => {});
} else {
  test(title, async () => {
    requireChromium();
    cluster = newCluster();
    cluster.startAll();
    const leader = await cluster.waitForLeader();

    context ??= await launch();
    const page = await context.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console error: ${message.text()}`);
    });
    // Served by a member that is not the leader: it must still find and show the leader.
    const viewer = cluster.members.find((member) => member.name !== leader)!;
    const response = await page.goto(`${viewer.url}/`, { timeout: 10_000 });
    expect(response?.status()).toBe(200);
    expect(await page.title()).toBe("keel");

    await waitForLeaderShown(page, leader);
    const rows = page.locator("tr[data-member]");
    expect(await rows.count()).toBe(3);
    expect((await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-member"))))
      .sort()).toEqual(["node-a", "node-b", "node-c"]);
    expect(await page.locator('tr[data-role="leader"]').count()).toBe(1);
    const followers = await page.locator('tr[data-role="follower"]').count();
    expect(followers).toBe(2);
    // Every member is read directly (CORS), and all are ready.
    await page.waitForFunction(
      () => document.querySelectorAll('td[data-ready="true"]').length === 3,
      undefined,
      { timeout: 10_000 },
    );
    expect(await page.locator("#recovery-none").isVisible()).toBe(true);
    expect(await page.locator("#recovery-none").textContent()).toBe("No recovery in progress");
    expect(await page.locator("#connection").getAttribute("data-state")).toBe("ok");

    // Move the leadership; the page must follow within a few seconds.
    const stepDown = await fetch(`${cluster.member(leader).url}/admin/step-down`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}` },
      signal: AbortSignal.timeout(10_000),
    });
    expect(stepDown.status).toBe(200);
    const { leader: next } = await stepDown.json() as { leader: string };
    expect(next).not.toBe(leader);
    const movedAt = Date.now();
    await waitForLeaderShown(page, next);
    expect(Date.now() - movedAt).toBeLessThan(5000);
    expect(await page.locator(`tr[data-member="${leader}"]`).getAttribute("data-role")).toBe(
      "follower",
    );
    // The viewer's events list shows the change of leader.
    await page.waitForFunction(
      (name) =>
        Array.from(document.querySelectorAll('#events li[data-kind="leader-changed"]'))
          .some((item) => item.textContent?.includes(name) === true),
      next,
      { timeout: 5000 },
    );
    expect(problems).toEqual([]);
  }, 90_000);
}

if (!skipBrowser) {
  test("the dashboard shows recovery progress and unreachable members", async () => {
    requireChromium();
    // One fake member serving the real app: its /status reports a recovery under way and a
    // peer that does not answer.
    const ops = new FakeOps();
    let url = "";
    const node = new FakeNode("node-a");
    node.status = () =>
      statusView({
        name: "node-a",
        clusterName: "fake",
        version: "test",
        role: "leader",
        term: 3,
        leader: "node-a",
        commitIndex: 10,
        appliedIndex: 10,
        members: [
          memberView({ name: "node-a", self: true, peer: "127.0.0.44:7070", http: url, lag: 0 }),
          memberView({
            name: "node-z",
            peer: "127.0.0.45:7070",
            http: "http://127.0.0.45:1",
            connected: false,
            lastError: "Cannot connect: connection refused",
          }),
          // Found by gossip, no address learned yet: never read as if it were this node.
          memberView({ name: "node-y", peer: "", http: "", connected: false }),
        ],
        recovery: {
          state: "catching-up",
          fencedReason: null,
          startedAt: 1_700_000_000_000,
          snapshotBytesDone: 512 * 1024,
          snapshotBytesTotal: 2 * 1024 * 1024,
          entriesDone: 0,
          entriesTotal: 10,
          bytesPerSecond: null,
          etaSeconds: null,
        },
      });
    const app = createApp({ node, kv: node.kv, bodyBytesMax: 1024, ops });
    const server = Bun.serve({ hostname: "127.0.0.44", port: 0, fetch: app.fetch });
    url = `http://127.0.0.44:${server.port}`;
    try {
      context ??= await launch();
      const page = await context.newPage();
      await page.goto(`${url}/`, { timeout: 10_000 });
      await page.waitForFunction(
        () => document.querySelector('[data-recovery="node-a"]') !== null,
        undefined,
        { timeout: 5000 },
      );
      expect(await page.locator("#recovery-none").isHidden()).toBe(true);
      const bar = page.locator("#recovery-node-a");
      expect(await bar.getAttribute("max")).toBe(String(2 * 1024 * 1024));
      expect(await bar.getAttribute("value")).toBe(String(512 * 1024));
      expect(await page.locator('[data-recovery="node-a"] label').textContent()).toBe(
        "node-a: 512.0 KiB of 2.0 MiB (25%)",
      );
      await page.waitForFunction(
        () => document.querySelector('tr[data-member="node-z"]')?.dataset.role === "unreachable",
        undefined,
        { timeout: 5000 },
      );
      expect(await page.locator('tr[data-member="node-z"] td[data-ready]').textContent())
        .toContain("unknown");
      expect(await page.locator('tr[data-member="node-y"]').getAttribute("data-role")).toBe(
        "unreachable",
      );
      expect(await page.locator('tr[data-member="node-y"]').textContent()).toContain(
        "address not known yet",
      );
      expect(await page.locator('tr[data-member="node-a"]').getAttribute("data-role")).toBe(
        "leader",
      );
      await page.close();
    } finally {
      await server.stop(true);
    }
  }, 60_000);
}

if (skipBrowser) {
  test.skip("the dashboard charts the load, the leader timeline and a killed member (skipped: KEEL_SKIP_BROWSER=1)", () => {});
} else {
  test("the dashboard charts the load, the leader timeline and a killed member", async () => {
    requireChromium();
    if (cluster === undefined) {
      cluster = newCluster();
      cluster.startAll();
    }
    const live = cluster;
    const leader = await live.waitForLeader();
    context ??= await launch();
    const page = await context.newPage();
    await page.setViewportSize({ width: 1280, height: 1400 });
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    const viewer = live.members.find((member) => member.name !== leader)!;
    await page.goto(`${viewer.url}/`, { timeout: 10_000 });

    // Every chart is drawn, each member has a row on the timeline.
    for (
      const id of ["chart-writes", "chart-reads", "chart-commit", "chart-applied", "chart-lag"]
    ) {
      await page.waitForFunction(
        (chartId) => document.querySelector(`#${chartId} svg`) !== null,
        id,
        { timeout: 10_000 },
      );
    }
    await page.waitForFunction(
      () => document.querySelectorAll("#timeline g[data-member]").length === 3,
      undefined,
      { timeout: 10_000 },
    );
    expect(await page.locator(`#timeline g[data-member="${leader}"]`).getAttribute("data-now"))
      .toBe("leader");

    // Under a steady load of writes and linearizable reads, the charts move: the writes/s
    // and reads/s totals and the leader's commit rate go above zero.
    let loading = true;
    const load = (async () => {
      let i = 0;
      while (loading) {
        const put = await live.put(leader, `load-${i % 50}`, String(i)).catch(() => undefined);
        await put?.body?.cancel();
        const get = await live.get(leader, `load-${i % 50}`).catch(() => undefined);
        await get?.body?.cancel();
        i++;
      }
      return i;
    })();
    try {
      const moved = (chartId: string, series: string) =>
        page.waitForFunction(
          ([id, name]) => {
            const figure = document.getElementById(id!);
            const latest = JSON.parse(figure?.dataset.latest ?? "{}");
            // A few seconds of history drawn, the newest point above zero.
            return Number(figure?.dataset.points) >= 3 && typeof latest[name!] === "number" &&
              latest[name!] > 0;
          },
          [chartId, series],
          { timeout: 15_000 },
        );
      await moved("chart-writes", "cluster");
      await moved("chart-reads", "cluster");
      await moved("chart-commit", leader);
      await moved("chart-applied", viewer.name);
      // The line itself moves: drawn again a second later, it has other points.
      const line = page.locator("#chart-writes polyline");
      const before = await line.getAttribute("points");
      expect(before?.split(" ").length).toBeGreaterThan(2);
      await page.waitForFunction(
        (points) =>
          document.querySelector("#chart-writes polyline")?.getAttribute("points") !== points,
        before,
        { timeout: 5000 },
      );
    } finally {
      loading = false;
      expect(await load).toBeGreaterThan(0);
    }

    // A killed member shows as down: in the table, and now on its timeline row.
    const victim = live.members.find((member) => member.name !== leader && member !== viewer)!;
    await live.kill(victim.name);
    await page.waitForFunction(
      (name) =>
        document.querySelector(`#timeline g[data-member="${name}"]`)?.dataset.now === "down" &&
        document.querySelector(`tr[data-member="${name}"]`)?.dataset.role === "unreachable",
      victim.name,
      { timeout: 10_000 },
    );
    expect(
      await page.locator(`#timeline g[data-member="${victim.name}"] rect[data-role="down"]`)
        .count(),
    )
      .toBeGreaterThan(0);

    // A few more seconds drawn, so that the screenshot shows the member down on its row.
    await page.waitForTimeout(3000);
    const screenshot = join(import.meta.dir, "..", "..", "test-results", "dashboard.png");
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`dashboard screenshot: ${screenshot}`);
    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);
}

/** newCluster is the 3-node cluster of this file, on 127.0.0.41-43. */
function newCluster(): TestCluster {
  return new TestCluster({
    ipBase: 41,
    extraYaml: `security:\n  admin_token: "${adminToken}"`,
  });
}

function requireChromium(): void {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `${chromiumPath} is missing: the dashboard tests need Debian's chromium ` +
        `("apt-get update && apt-get install -y chromium"); set KEEL_SKIP_BROWSER=1 to skip them`,
    );
  }
}

async function launch(): Promise<BrowserContext> {
  profileDir = mkdtempSync(join(tmpdir(), "keel-chromium-"));
  return await chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    timeout: 30_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** waitForLeaderShown waits until the summary and the table both name `name` as leader. */
async function waitForLeaderShown(page: Page, name: string): Promise<void> {
  await page.waitForFunction(
    (expected) =>
      document.getElementById("leader")?.dataset.leader === expected &&
      document.querySelector(`tr[data-member="${expected}"]`)?.dataset.role === "leader",
    name,
    { timeout: 5000 },
  );
}
