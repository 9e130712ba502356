// Host replacement alone, as one JSON line: the replacement phase of `make bench`
// (scripts/bench_replacement.ts) with a state of any shape. `make bench` runs it with
// 100 MB of 10,000-byte values and prints it; this is for trying other sizes and refresh
// intervals. Timings are measurements, never pass/fail.
//
//   bun scripts/replacement_bench.ts [--keys=2000] [--value-bytes=100] [--refresh=DURATION]
//                                    [--steady=SECONDS] [--binary=dist/keel] [--tmp=DIR]
//
// --refresh sets resolver.refresh (e.g. "1s"); without it keel's default (5s) is used.

import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { parseDuration } from "../src/lib/duration.ts";
import { replacementProblems, runReplacement } from "./bench_replacement.ts";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "2000" },
    "value-bytes": { type: "string", default: "100" },
    refresh: { type: "string" },
    steady: { type: "string", default: "2" },
    binary: { type: "string", default: "dist/keel" },
    tmp: { type: "string", default: tmpdir() },
  },
});

function fail(message: string): never {
  console.error(`replacement_bench: ${message}`);
  process.exit(2);
}

const keys = Number(values.keys);
const valueBytes = Number(values["value-bytes"]);
const steadyS = Number(values.steady);
if (!Number.isSafeInteger(keys) || keys < 1) fail(`--keys must be a positive integer`);
if (!Number.isSafeInteger(valueBytes) || valueBytes < 1 || valueBytes > 1_000_000) {
  fail(`--value-bytes must be an integer from 1 to 1000000`);
}
if (!(steadyS > 0 && steadyS <= 3600)) fail(`--steady must be seconds in (0, 3600]`);
let refreshMs: number | undefined;
if (values.refresh !== undefined) {
  try {
    refreshMs = parseDuration(values.refresh);
  } catch (error: unknown) {
    fail(error instanceof Error ? error.message : String(error));
  }
}
const binary = resolve(values.binary);
if (!existsSync(binary)) fail(`No keel binary at "${binary}"; run "make build" first`);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  // Exiting kills the cluster and removes its temp dir (scripts/bench_cluster.ts).
  process.on(signal, () => process.exit(130));
}

const result = await runReplacement({
  binary,
  tmpParent: resolve(values.tmp),
  keys,
  valueBytes,
  steadyMs: steadyS * 1000,
  warmupMs: 1000,
  ...(refreshMs === undefined ? {} : { refreshMs }),
});
console.log(JSON.stringify(result));
const problems = replacementProblems(result);
for (const problem of problems) console.error(`replacement_bench: PROBLEM: ${problem}`);
process.exit(problems.length === 0 ? 0 : 1);
