// The operations pack, judged by the real tools: Prometheus's promtool (check metrics on a
// live /metrics of the compiled binary, check rules, test rules), systemd-analyze verify on
// the unit file, and the Grafana dashboard read against a live scrape. CI installs the tools
// from Debian's packages (.ci/run: prometheus, systemd); without one, its tests are skipped
// and say which package brings it. The cluster runs on 127.0.0.56-58.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { binaryPath, requireBinary, TestCluster } from "../support/cluster.ts";
import { parseExposition } from "../support/prometheus.ts";

const root = resolve(import.meta.dir, "..", "..");
const rulesPath = join(root, "deploy", "prometheus", "keel-rules.yml");
const rulesTestPath = join(root, "deploy", "prometheus", "keel-rules.test.yml");
const unitPath = join(root, "deploy", "systemd", "keel.service");
const dashboardPath = join(root, "deploy", "grafana", "keel.json");

const promtool = Bun.which("promtool");
const systemdAnalyze = Bun.which("systemd-analyze");
const withPromtool = promtool === null ? test.skip : test;
const withSystemd = systemdAnalyze === null ? test.skip : test;
const noPromtool = promtool === null
  ? " (skipped: promtool not found; apt-get install prometheus)"
  : "";
const noSystemd = systemdAnalyze === null
  ? " (skipped: systemd-analyze not found; apt-get install systemd)"
  : "";

interface Run {
  code: number;
  output: string;
}

function run(command: string[], input?: string): Run {
  const child = Bun.spawnSync(command, {
    cwd: tmpdir(),
    stdin: input === undefined ? "ignore" : new TextEncoder().encode(input),
    stdout: "pipe",
    stderr: "pipe",
  });
  return {
    code: child.exitCode,
    output: `${child.stdout.toString()}${child.stderr.toString()}`.trim(),
  };
}

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), "keel-ops-pack-"));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe("Prometheus rules", () => {
  withPromtool(`promtool check rules accepts deploy/prometheus/keel-rules.yml${noPromtool}`, () => {
    const result = run([promtool!, "check", "rules", rulesPath]);
    expect(result.output).toContain("SUCCESS");
    expect(result.code).toBe(0);
  });

  withPromtool(`promtool test rules passes keel-rules.test.yml${noPromtool}`, () => {
    const result = run([promtool!, "test", "rules", rulesTestPath]);
    expect(result.output).toContain("SUCCESS");
    expect(result.code).toBe(0);
  }, 60_000);

  test("every alert of the rules file is exercised by its unit tests", () => {
    const alerts = [...readFileSync(rulesPath, "utf8").matchAll(/^\s+- alert: (\w+)$/gm)]
      .map((match) => match[1]!);
    expect(alerts.length).toBeGreaterThan(8);
    const tests = readFileSync(rulesTestPath, "utf8");
    for (const alert of alerts) {
      // Firing at least once (an exp_alerts list with labels), not only "stays quiet".
      const firing = new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`);
      expect(firing.test(tests), `${alert} fires in keel-rules.test.yml`).toBe(true);
    }
  });
});

describe("systemd unit", () => {
  withSystemd(`systemd-analyze verify accepts deploy/systemd/keel.service${noSystemd}`, () => {
    requireBinary();
    // verify checks that ExecStart's program exists: point it at the binary under test
    // rather than /usr/local/bin/keel, which a build machine does not have.
    const unit = readFileSync(unitPath, "utf8");
    expect(unit).toContain("ExecStart=/usr/local/bin/keel run ");
    const copy = join(scratch, "keel.service");
    writeFileSync(copy, unit.replaceAll("/usr/local/bin/keel", binaryPath));
    const result = run([systemdAnalyze!, "verify", copy]);
    // verify exits 0 on unknown keys and bad values too, only warning: none is allowed.
    expect(result.output).toBe("");
    expect(result.code).toBe(0);
  });

  test("docs/deploy.md shows the shipped unit file, unchanged", () => {
    const docs = readFileSync(join(root, "docs", "deploy.md"), "utf8");
    const section = docs.slice(docs.indexOf("## systemd\n"));
    const block = /```ini\n([\s\S]*?)```\n/.exec(section)?.[1];
    expect(block).toBe(readFileSync(unitPath, "utf8"));
  });
});

// ---- A live cluster: /metrics through promtool, and the dashboard's metrics ----------------

/** Dashboard is the little of Grafana's dashboard JSON that this test reads. */
interface Dashboard {
  title: string;
  uid: string;
  panels: Array<{ title: string; type: string; targets?: Array<{ expr: string }> }>;
}

const promqlWords = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "bool",
  "offset",
]);

/**
 * metricNames are the metric names an expression reads: identifiers that are neither
 * functions (followed by "("), keywords, label names (inside {} or a by/on list) nor inside
 * strings or range brackets.
 */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set<string>();
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = stripped.slice(match.index + match[0].length).trimStart();
    if (after.startsWith("(") || promqlWords.has(match[0])) continue;
    names.add(match[0]);
  }
  return [...names];
}

describe("with a running cluster", () => {
  let cluster: TestCluster;
  const scrapes: string[] = [];

  beforeAll(async () => {
    cluster = new TestCluster({ ipBase: 56, name: "ops-pack" });
    cluster.startAll();
    const leader = await cluster.waitForLeader();
    // Writes and reads, so the histograms and counters have samples, then one scrape of
    // each member (the leader alone has the per-follower lag).
    for (let i = 0; i < 20; i++) {
      const put = await cluster.put(leader, `k${i}`, `v${i}`);
      expect(put.status).toBe(200);
      await put.body?.cancel();
      const get = await cluster.get(leader, `k${i}`);
      expect(await get.text()).toBe(`v${i}`);
    }
    for (const member of cluster.members) {
      const response = await fetch(`${member.url}/metrics`, { signal: AbortSignal.timeout(5000) });
      expect(response.status).toBe(200);
      scrapes.push(await response.text());
    }
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  withPromtool(`promtool check metrics accepts every member's /metrics${noPromtool}`, () => {
    for (const [i, text] of scrapes.entries()) {
      const result = run([promtool!, "check", "metrics"], text);
      expect(result.output, `${cluster.members[i]!.name}'s /metrics`).toBe("");
      expect(result.code).toBe(0);
    }
  });

  test("every metric the Grafana dashboard reads is on /metrics", () => {
    const dashboard = JSON.parse(readFileSync(dashboardPath, "utf8")) as Dashboard;
    expect(dashboard.title).toBe("keel");
    const exposed = new Set<string>(["up"]); // added by Prometheus to every scrape
    for (const text of scrapes) {
      for (const family of parseExposition(text).values()) {
        exposed.add(family.name);
        if (family.type === "histogram") {
          for (const suffix of ["_bucket", "_sum", "_count"]) exposed.add(family.name + suffix);
        }
      }
    }
    const exprs = dashboard.panels.flatMap((panel) =>
      (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr }))
    );
    expect(exprs.length).toBeGreaterThan(20);
    const missing: string[] = [];
    const read = new Set<string>();
    for (const { panel, expr } of exprs) {
      for (const name of metricNames(expr)) {
        read.add(name);
        if (!exposed.has(name)) missing.push(`${panel}: ${name} (in ${expr})`);
      }
    }
    expect(missing).toEqual([]);
    // What the issue asks the dashboard for, at least.
    for (
      const name of [
        "keel_role",
        "keel_ready",
        "keel_proposals_total",
        "keel_reads_served_total",
        "keel_commit_index",
        "keel_applied_index",
        "keel_peer_lag_entries",
        "keel_fsync_seconds_bucket",
        "keel_dns_lookup_failures_total",
        "keel_storage_bytes",
      ]
    ) {
      expect(read.has(name), name).toBe(true);
    }
  });

  withPromtool(`every expression of the Grafana dashboard is valid PromQL${noPromtool}`, () => {
    // promtool has no dashboard check; a recording rule per expression makes check rules
    // parse each one ($job is Grafana's variable, a valid regex for Prometheus).
    const dashboard = JSON.parse(readFileSync(dashboardPath, "utf8")) as Dashboard;
    const exprs = dashboard.panels.flatMap((panel) => panel.targets ?? []).map((t) => t.expr);
    const rules = [
      "groups:",
      "  - name: dashboard",
      "    rules:",
      ...exprs.flatMap((expr, i) => [
        `      - record: keel_dashboard:expr${i}`,
        `        expr: ${JSON.stringify(expr)}`,
      ]),
    ].join("\n");
    const file = join(scratch, "dashboard-rules.yml");
    writeFileSync(file, `${rules}\n`);
    const result = run([promtool!, "check", "rules", file]);
    expect(result.output).toContain(`SUCCESS: ${exprs.length} rules found`);
    expect(result.code).toBe(0);
  });
});

test("metricNames reads names, not functions, labels or keywords", () => {
  expect(
    metricNames(
      'histogram_quantile(0.99, sum by (instance, le) (rate(keel_fsync_seconds_bucket{job=~"$job"}[5m])))',
    ),
  ).toEqual(["keel_fsync_seconds_bucket"]);
  expect(metricNames('keel_commit_index{job="a"} - on (instance) keel_applied_index')).toEqual([
    "keel_commit_index",
    "keel_applied_index",
  ]);
  expect(metricNames("keel_ready == 0 unless keel_x")).toEqual(["keel_ready", "keel_x"]);
});
