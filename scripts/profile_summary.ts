// profile_summary prints where a CPU profile's samples went: the functions with the most
// samples of their own (self) and the most samples under them (inclusive), by share of
// all samples. Samples are taken only while the thread runs, so shares are of CPU time,
// not of wall time (the Markdown that bun --cpu-prof-md writes estimates time between
// samples, which counts idle time against whatever ran last).
//
//   bun scripts/profile_summary.ts FILE.cpuprofile [--top=N] [--callers=NAME]
//
// Profiles come from `bun --cpu-prof` (make bench BENCH_ARGS="--cpu-prof=DIR ...").

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
}

const usage = "Usage: bun scripts/profile_summary.ts FILE.cpuprofile [--top=N] [--callers=NAME]";
const { values, positionals } = parseArgs({
  args: Bun.argv.slice(2),
  options: { top: { type: "string", default: "30" }, callers: { type: "string" } },
  allowPositionals: true,
});
const file = positionals[0];
const top = Number(values.top);
if (file === undefined || !(top > 0)) {
  console.error(usage);
  process.exit(2);
}

const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) {
  for (const child of node.children ?? []) parent.set(child, node.id);
}

function label(node: ProfileNode): string {
  const frame = node.callFrame;
  const where = frame.url.replace(/^file:\/\//, "").replace(process.cwd() + "/", "");
  return `${frame.functionName || "(anonymous)"} ${where || "[native]"}:${frame.lineNumber + 1}`;
}

const counts = new Map<number, number>();
for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
const total = profile.samples.length;
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const callers = new Map<string, number>();
for (const [id, count] of counts) {
  const own = label(nodes.get(id)!);
  self.set(own, (self.get(own) ?? 0) + count);
  const seen = new Set<string>();
  const chain: string[] = [];
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const name = label(nodes.get(at)!);
    chain.push(name);
    if (seen.has(name)) continue;
    seen.add(name);
    inclusive.set(name, (inclusive.get(name) ?? 0) + count);
  }
  if (values.callers !== undefined && own.startsWith(values.callers)) {
    const path = chain.slice(1, 5).join(" < ");
    callers.set(path, (callers.get(path) ?? 0) + count);
  }
}

function print(title: string, table: Map<string, number>): void {
  console.log(`\n${title}`);
  const rows = [...table].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, count] of rows) {
    console.log(`${(100 * count / total).toFixed(1).padStart(5)}%  ${name}`);
  }
}

console.log(`${file}: ${total} samples`);
print("self (samples in the function itself)", self);
print("inclusive (samples in the function and what it called)", inclusive);
if (values.callers !== undefined) print(`callers of ${values.callers}`, callers);
