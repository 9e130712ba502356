// The short chaos run (test/support/chaos.ts): a real 3-node cluster addressed through a
// DNS server under every fault kind the nemesis knows, for about 65 s with a fixed seed;
// then proof that the checks bite: anomalies planted in the recorded history are reported.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ChaosRecord,
  type ChaosSummary,
  checkChaosHistory,
  faultKinds,
  runChaos,
} from "../support/chaos.ts";
import { requireBinary } from "../support/cluster.ts";

const resultsDir = mkdtempSync(join(tmpdir(), "keel-chaos-"));
let summary: ChaosSummary | undefined;

afterAll(() => {
  if (summary?.ok) rmSync(resultsDir, { recursive: true, force: true });
});

function loadHistory(): ChaosRecord[] {
  return readFileSync(summary!.historyPath, "utf8").split("\n").filter((line) => line !== "")
    .map((line) => JSON.parse(line) as ChaosRecord);
}

const known = (record: ChaosRecord) => record.return !== null && record.return !== Infinity;

test("a short chaos run under every fault kind is linearizable and loses nothing", async () => {
  requireBinary();
  summary = await runChaos({
    durationMs: 65_000,
    seed: 5,
    ipBase: 231,
    dnsHost: "127.0.0.230",
    resultsDir,
    checkTimeoutMs: 30_000,
    log: () => {},
  });
  console.log(summary.line);
  expect(summary.anomalies).toEqual([]);
  expect(summary.linearizable).toBe("ok");
  expect(summary.ok).toBe(true);
  expect(summary.line).toStartWith("chaos ok ");
  for (const kind of faultKinds) expect(summary.faults[kind]).toBeGreaterThanOrEqual(1);
  expect(summary.acknowledged).toBeGreaterThan(500);
}, 180_000);

test("the checks report a read of a value nobody wrote, planted in the recorded history", () => {
  expect(summary).toBeDefined();
  const history = loadHistory();
  expect(checkChaosHistory(history, 30_000).linearizability.result).toBe("ok");
  const victim = history.find((r) =>
    r.op === "get" && known(r) && r.output !== null && r.final === undefined
  )!;
  (victim as { output: string }).output = "planted-never-written";
  const check = checkChaosHistory(history, 30_000);
  expect(check.linearizability.result).toBe("illegal");
  const report = check.linearizability.perKey.get(victim.key)!;
  expect(report.counterexample?.explanation).toContain("planted-never-written");
}, 60_000);

test("the checks report an acknowledged write missing from the final state", () => {
  const history = loadHistory();
  // The final reads of a key are made to return an acknowledged put that a later
  // acknowledged write (called after it returned) overwrote: a lost write.
  const puts = history.filter((r) => r.op === "put" && known(r) && r.key !== "probe");
  const overwritten = puts.find((early) =>
    puts.some((later) => later.key === early.key && later.call > early.return!)
  )!;
  expect(overwritten).toBeDefined();
  for (const record of history) {
    if (record.final !== undefined && record.key === overwritten.key && record.op === "get") {
      (record as { output: string }).output = overwritten.op === "put" ? overwritten.input : "";
    }
  }
  const check = checkChaosHistory(history, 30_000);
  expect(check.lostWrites.length).toBeGreaterThanOrEqual(1);
  expect(check.lostWrites[0]).toContain(`key ${overwritten.key}`);
  expect(check.linearizability.result).toBe("illegal");
}, 60_000);

test("the checks report a value applied twice (seen at two log indexes)", () => {
  const history = loadHistory();
  // A read of a value some other record also saw (or wrote) at a known index.
  const read = history.find((r) =>
    r.op === "get" && known(r) && r.output !== null && r.modIndex !== undefined &&
    history.some((other) =>
      other !== r && other.key === r.key && other.modIndex !== undefined &&
      (other.op === "get"
        ? other.output === r.output
        : other.op === "put" && other.input === r.output)
    )
  )!;
  expect(read).toBeDefined();
  read.modIndex = read.modIndex! + 1_000_000;
  const check = checkChaosHistory(history, 30_000);
  expect(check.duplicates.length).toBe(1);
  expect(check.linearizability.result).toBe("ok");
}, 60_000);
