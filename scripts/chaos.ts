// chaos runs the chaos runner (test/support/chaos.ts): a real cluster of dist/keel under a
// seeded nemesis, its history checked, one summary line printed. Exit code 0 when the run
// is ok, 1 on any anomaly, 3 when the checker could not decide in time, 2 on bad arguments.
//
//   bun scripts/chaos.ts [--duration=60s] [--seed=N] [--nodes=3|5] [--check-timeout=60s]
//                        [--ip-base=201] [--dns-host=127.0.0.200]
//   bun scripts/chaos.ts --replay=chaos-results/FILE.jsonl     re-check a saved history
//
// The history (JSON lines) and the members' log tails stay in chaos-results/.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseDuration } from "../src/lib/duration.ts";
import { type ChaosRecord, checkChaosHistory, runChaos } from "../test/support/chaos.ts";

const usage = "Usage: bun scripts/chaos.ts [--duration=60s] [--seed=N] [--nodes=3|5] " +
  "[--check-timeout=60s] [--ip-base=201] [--dns-host=127.0.0.200] [--replay=FILE]";

function fail(message: string): never {
  console.error(`${message}\n${usage}`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      duration: { type: "string", default: "60s" },
      seed: { type: "string", default: "1" },
      nodes: { type: "string", default: "3" },
      "check-timeout": { type: "string", default: "60s" },
      replay: { type: "string" },
      "ip-base": { type: "string", default: "201" },
      "dns-host": { type: "string", default: "127.0.0.200" },
    },
  }));
} catch (error: unknown) {
  fail(error instanceof Error ? error.message : String(error));
}

const checkTimeoutMs = parseDuration(values["check-timeout"]);

if (values.replay !== undefined) {
  const records = readFileSync(values.replay, "utf8").split("\n").filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ChaosRecord);
  const check = checkChaosHistory(records, checkTimeoutMs);
  for (const report of check.linearizability.perKey.values()) {
    if (report.counterexample !== undefined) console.error(report.counterexample.explanation);
    else if (report.result === "unknown") console.error(`key ${report.key}: ${report.reason}`);
  }
  for (const text of check.lostWrites) console.error(`lost write: ${text}`);
  for (const text of check.duplicates) console.error(`applied twice: ${text}`);
  const bad = check.lostWrites.length + check.duplicates.length > 0 ||
    check.linearizability.result === "illegal";
  console.log(
    `replay ${bad ? "FAIL" : check.linearizability.result} ops=${records.length} ` +
      `linearizable=${check.linearizability.result} lost=${check.lostWrites.length} ` +
      `duplicates=${check.duplicates.length}`,
  );
  process.exit(bad ? 1 : check.linearizability.result === "ok" ? 0 : 3);
}

const nodes = Number(values.nodes);
if (nodes !== 3 && nodes !== 5) fail(`--nodes must be 3 or 5, not "${values.nodes}"`);
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) {
  fail(`--seed must be an integer, not "${values.seed}"`);
}
let durationMs: number;
try {
  durationMs = parseDuration(values.duration);
} catch (error: unknown) {
  fail(error instanceof Error ? error.message : String(error));
}

// Members take ip-base.., their link proxies the next nodes*nodes addresses.
const ipBase = Number(values["ip-base"]);
if (!Number.isInteger(ipBase) || ipBase < 2 || ipBase + nodes + nodes * nodes > 254) {
  fail(`--ip-base must leave room for ${nodes + nodes * nodes} addresses below 127.0.0.255`);
}
const summary = await runChaos({
  durationMs,
  seed,
  nodes,
  checkTimeoutMs,
  ipBase,
  dnsHost: values["dns-host"],
});
for (const anomaly of summary.anomalies) console.error(`anomaly: ${anomaly}`);
console.log(summary.line);
process.exit(summary.ok ? 0 : summary.anomalies.length === 0 ? 3 : 1);
