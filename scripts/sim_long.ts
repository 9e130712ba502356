// sim_long runs the deterministic simulator over many seeds of every fault profile at 3
// and 5 nodes, spread over worker processes (one per core by default), and prints one
// summary line per profile and node count and a reproduce line for every failure.
//
//   bun scripts/sim_long.ts [--seeds=N] [--seed=FIRST] [--profiles=a,b] [--nodes=3,5]
//                           [--workers=N] [--ticks=N] [--chunk=N]
//                           [--digest-out=FILE] [--digest-compare=FILE]
//
// --seeds is the number of seeds per profile and node count (default 20000), from --seed
// (default 7000001); --ticks as scripts/sim.ts (defaultTicks). --digest-out writes each
// seed's trace digest (test/sim/digest.ts), one line per seed, sorted:
// `profile nodes seed ok|FAILED digest`. --digest-compare checks each seed's digest
// against such a file written earlier (of the tree before a refactor, say) and prints
// every seed that differs.
//
// Exit code: 1 if a seed failed (with --digest-compare: if a seed's status or digest
// differs from the file, or the file lacks it; a seed that fails exactly as it did there is
// the same run), 2 on bad arguments. Summary "seconds" are CPU seconds (what the seeds
// took in their workers, summed; other load on the machine does not count), so "seeds/s"
// is per core; the total line gives the wall-clock time of the whole run.

import { availableParallelism } from "node:os";
import { appendFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  defaultTicks,
  faultProfiles,
  type ProfileName,
  runSimulation,
} from "../test/sim/cluster.ts";
import {
  compareDigests,
  type DigestLine,
  formatDigests,
  readDigests,
  reportComparison,
} from "./sim_digest.ts";

const usage = "Usage: bun scripts/sim_long.ts [--seeds=N] [--seed=FIRST] [--profiles=a,b] " +
  "[--nodes=3,5] [--workers=N] [--ticks=N] [--chunk=N] [--digest-out=FILE] " +
  "[--digest-compare=FILE]";
/** Seconds between progress lines on stderr. */
const progressIntervalMs = 30_000;

/** Job is a run of consecutive seeds of one profile and node count, for one worker. */
interface Job {
  profile: ProfileName;
  nodes: 3 | 5;
  seed: number;
  count: number;
  ticks: number;
  digest: boolean;
}

/** SeedResult is what a worker reports for one seed. */
interface SeedResult {
  profile: ProfileName;
  nodes: 3 | 5;
  seed: number;
  ok: boolean;
  /** CPU time the seed took (user and system), in milliseconds. */
  cpuMs: number;
  digest: string;
  /** The failure's first line (what broke, and when). */
  failure?: string;
}

function fail(message: string): never {
  console.error(message);
  console.error(usage);
  process.exit(2);
}

function integer(name: string, text: string | undefined, fallback: number, min = 0): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    fail(`Option --${name} must be an integer of at least ${min}, got "${text}"`);
  }
  return value;
}

/** runJob runs a job's seeds in this process, reporting each seed as it ends. */
function runJob(job: Job, report: (result: SeedResult) => void): void {
  for (let seed = job.seed; seed < job.seed + job.count; seed++) {
    const started = process.cpuUsage();
    let ok: boolean;
    let digest = "";
    let failure: string | undefined;
    try {
      const result = runSimulation({
        seed,
        nodes: job.nodes,
        ticks: job.ticks,
        faults: faultProfiles[job.profile],
        profile: job.profile,
        digest: job.digest,
      });
      ok = result.ok;
      digest = result.digest ?? "";
      // The first line, without "simulation failed (seed, nodes, profile): ".
      failure = result.failure?.split("\n")[0]?.replace(/^simulation failed \([^)]*\): /, "");
    } catch (error: unknown) {
      // runSimulation catches what the run throws; this is the harness itself breaking.
      ok = false;
      failure = `the simulator threw ${error instanceof Error ? error.stack : String(error)}`;
    }
    const used = process.cpuUsage(started);
    report({
      profile: job.profile,
      nodes: job.nodes,
      seed,
      ok,
      cpuMs: (used.user + used.system) / 1000,
      digest,
      ...(failure === undefined ? {} : { failure }),
    });
  }
}

/** serve is a worker: a job per stdin line, a SeedResult per stdout line. */
async function serve(): Promise<void> {
  for await (const line of console) {
    if (line.trim() === "") continue;
    const job = JSON.parse(line) as Job;
    const out: string[] = [];
    runJob(job, (result) => out.push(JSON.stringify(result)));
    process.stdout.write(out.join("\n") + "\n");
  }
}

/** lines splits a byte stream into text lines. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
  if (buffered !== "") yield buffered;
}

/** runWorker spawns a worker process and feeds it jobs from the queue until it is empty. */
async function runWorker(queue: Job[], onResult: (result: SeedResult) => void): Promise<void> {
  const child = Bun.spawn([process.execPath, import.meta.path, "--worker"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = lines(child.stdout);
  for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
    child.stdin.write(JSON.stringify(job) + "\n");
    await child.stdin.flush();
    for (let i = 0; i < job.count; i++) {
      const next = await reader.next();
      if (next.done === true) {
        throw new Error(
          `Worker ${child.pid} ended (exit code ${await child.exited}) during ${job.profile}/` +
            `${job.nodes} seeds ${job.seed}..${job.seed + job.count - 1}`,
        );
      }
      onResult(JSON.parse(next.value) as SeedResult);
    }
  }
  child.stdin.end();
  await child.exited;
}

interface Group {
  profile: ProfileName;
  nodes: 3 | 5;
  seeds: number;
  failed: number;
  cpuMs: number;
}

async function main(): Promise<void> {
  const { values } = (() => {
    try {
      return parseArgs({
        options: {
          seeds: { type: "string" },
          seed: { type: "string" },
          profiles: { type: "string" },
          nodes: { type: "string" },
          workers: { type: "string" },
          ticks: { type: "string" },
          chunk: { type: "string" },
          "digest-out": { type: "string" },
          "digest-compare": { type: "string" },
          help: { type: "boolean", default: false },
        },
        strict: true,
      });
    } catch (error: unknown) {
      fail(error instanceof Error ? error.message : String(error));
    }
  })();
  const allProfiles = Object.keys(faultProfiles) as ProfileName[];
  if (values.help) {
    console.log(usage);
    console.log(`Profiles: ${allProfiles.join(", ")} (default all)`);
    process.exit(0);
  }
  const seeds = integer("seeds", values.seeds, 20_000, 1);
  const first = integer("seed", values.seed, 7_000_001);
  const ticks = integer("ticks", values.ticks, defaultTicks, 1);
  const chunk = integer("chunk", values.chunk, 20, 1);
  const workerCount = integer("workers", values.workers, availableParallelism(), 1);
  const profiles = (values.profiles?.split(",") ?? allProfiles).map((name) => {
    if (!(name in faultProfiles)) {
      fail(`Unknown profile "${name}"; expected one of ${allProfiles.join(", ")}`);
    }
    return name as ProfileName;
  });
  const nodeCounts = (values.nodes?.split(",") ?? ["3", "5"]).map((text) => {
    if (text !== "3" && text !== "5") fail(`Option --nodes takes 3 and 5, got "${text}"`);
    return Number(text) as 3 | 5;
  });
  const comparePath = values["digest-compare"];
  let reference: Map<string, DigestLine> | undefined;
  if (comparePath !== undefined) {
    try {
      reference = readDigests(comparePath);
    } catch (error: unknown) {
      fail(error instanceof Error ? error.message : String(error));
    }
  }
  const digest = values["digest-out"] !== undefined || reference !== undefined;

  const groups = new Map<string, Group>();
  for (const profile of profiles) {
    for (const nodes of nodeCounts) {
      groups.set(`${profile}/${nodes}`, { profile, nodes, seeds: 0, failed: 0, cpuMs: 0 });
    }
  }
  // Seed-major: a run stopped early has covered the same seeds of every profile.
  const queue: Job[] = [];
  for (let seed = first; seed < first + seeds; seed += chunk) {
    const count = Math.min(chunk, first + seeds - seed);
    for (const { profile, nodes } of groups.values()) {
      queue.push({ profile, nodes, seed, count, ticks, digest });
    }
  }
  // The digest file grows as seeds end (a run stopped early leaves a usable file) and is
  // rewritten sorted at the end.
  const digestPath = values["digest-out"];
  if (digestPath !== undefined) writeFileSync(digestPath, "");
  // SIGINT or SIGTERM: no new jobs; the chunks under way end, then the summary as usual.
  let stopped = false;
  const stop = (): void => {
    if (stopped) process.exit(130);
    stopped = true;
    queue.length = 0;
    console.error("sim-long: stopping after the chunks under way (again to quit at once)");
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  const total = seeds * groups.size;
  const digests: DigestLine[] = [];
  const started = performance.now();
  let done = 0;
  let failed = 0;
  const onResult = (result: SeedResult): void => {
    const group = groups.get(`${result.profile}/${result.nodes}`)!;
    group.seeds++;
    group.cpuMs += result.cpuMs;
    done++;
    if (!result.ok) {
      group.failed++;
      failed++;
      console.log(
        `FAILED profile=${result.profile} nodes=${result.nodes} seed=${result.seed}: ${result.failure}`,
      );
      console.log(
        `reproduce: bun scripts/sim.ts --seed=${result.seed} --profile=${result.profile} --nodes=${result.nodes}`,
      );
    }
    if (digest) {
      const { profile, nodes, seed, ok } = result;
      const line = { profile, nodes, seed, ok, digest: result.digest };
      digests.push(line);
      if (digestPath !== undefined) appendFileSync(digestPath, formatDigests([line]));
    }
  };
  console.log(
    `sim-long: ${seeds} seeds from ${first} of ${profiles.length} profiles at ${
      nodeCounts.join(" and ")
    } nodes (${total} runs, ${ticks} ticks) on ${workerCount} workers`,
  );
  const progress = setInterval(() => {
    const seconds = (performance.now() - started) / 1000;
    console.error(
      `sim-long: ${done} of ${total} seeds, ${failed} failed, ${seconds.toFixed(0)} s, ` +
        `${(done / seconds).toFixed(1)} seeds/s`,
    );
  }, progressIntervalMs);
  // A worker that dies (killed, out of memory) ends the run as a stop does: the others end
  // their chunks, and what ran is summarised and written.
  const workerRun = async (): Promise<void> => {
    try {
      await runWorker(queue, onResult);
    } catch (error: unknown) {
      console.error(`sim-long: ${error instanceof Error ? error.message : String(error)}`);
      stopped = true;
      queue.length = 0;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(workerCount, queue.length) }, workerRun));
  } finally {
    clearInterval(progress);
  }
  const wallSeconds = (performance.now() - started) / 1000;

  for (const group of groups.values()) {
    const seconds = group.cpuMs / 1000;
    console.log(
      `profile=${group.profile} nodes=${group.nodes} seeds=${group.seeds} failed=${group.failed} ` +
        `seconds=${seconds.toFixed(1)} seeds/s=${
          seconds > 0 ? (group.seeds / seconds).toFixed(1) : "-"
        }`,
    );
  }
  console.log(
    `total: ${done} seeds, ${failed} failed, ${wallSeconds.toFixed(1)} s wall-clock on ` +
      `${workerCount} workers, ${(done / wallSeconds).toFixed(1)} seeds/s` +
      (stopped ? ` (stopped early: ${total - done} seeds not run)` : ""),
  );
  if (digestPath !== undefined) {
    writeFileSync(digestPath, formatDigests(digests));
    console.log(`digests: ${digests.length} lines written to ${digestPath}`);
  }
  if (reference !== undefined) {
    const same = reportComparison(compareDigests(reference, digests), comparePath!);
    process.exit(same ? 0 : 1);
  }
  process.exit(failed > 0 || stopped ? 1 : 0);
}

if (process.argv.includes("--worker")) {
  await serve();
} else {
  await main();
}
