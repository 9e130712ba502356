// sim runs the deterministic cluster simulator for one seed (or a range of seeds) and
// prints a summary line per seed. Exit code 1 on a violation, 2 on bad arguments.
//
//   bun scripts/sim.ts [--seed=N] [--seeds=N] [--nodes=3|5] [--ticks=N] [--profile=NAME]
//                      [--bug=NAME] [--unsafe=RULE] [--skip-check=NAME] [--verbose]
//                      [--digest] [--digest-lines]
//
// --seed is the first seed (default 1); --seeds how many to run from there (default 1).
// --unsafe turns a safety rule of the core off (config.ts RaftConfig.unsafe), to see the
// checks catch what the rule prevents; --skip-check turns a direct rule check off.
// --digest ends each summary line with the run's trace digest (test/sim/digest.ts);
// --digest-lines prints every line the digest hashes, to diff one seed's trace between
// two trees whose digests differ (scripts/sim_long.ts --digest-compare finds the seeds).

import { parseArgs } from "node:util";
import {
  type BugName,
  type CheckName,
  defaultProfile,
  defaultTicks,
  faultProfiles,
  type HarnessBugs,
  type ProfileName,
  runSimulation,
  type SimOptions,
  type SimResult,
  type SkippedChecks,
  type UnsafeName,
  type UnsafeRules,
} from "../test/sim/cluster.ts";

const usage = "Usage: bun scripts/sim.ts [--seed=N] [--seeds=N] [--nodes=3|5] [--ticks=N] " +
  "[--profile=NAME] [--bug=NAME] [--unsafe=RULE] [--skip-check=NAME] [--verbose] " +
  "[--digest] [--digest-lines]";
const bugNames: BugName[] = [
  "ackBeforeCommit",
  "forgetVoteOnRestart",
  "sendBeforePersist",
  "sendBeforeSync",
  "staleSnapshot",
  "zombieClaimsCurrent",
  "votesHideRecovering",
];
const unsafeNames: UnsafeName[] = [
  "recoveringVotes",
  "fenceCountsReplaced",
  "admitSuperseded",
  "ignoreRollback",
  "bootstrapIgnoresState",
];
const checkNames: CheckName[] = ["recoveringGrants"];

function fail(message: string): never {
  console.error(message);
  console.error(usage);
  process.exit(2);
}

function integer(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    fail(`Option --${name} must be a non-negative integer, got "${text}"`);
  }
  return value;
}

function summary(options: SimOptions, result: SimResult): string {
  const s = result.stats;
  return [
    `seed=${options.seed}`,
    `nodes=${options.nodes}`,
    `profile=${options.profile}`,
    result.ok ? "ok" : "FAILED",
    `ticks=${s.ticks}`,
    `leaders=${s.leadersElected}`,
    `maxTerm=${s.maxTerm}`,
    `proposed=${s.proposed}`,
    `acked=${s.acknowledged}`,
    `reads=${s.readsServed}/${s.readsIssued}`,
    `transfers=${s.transfersAccepted}/${s.transfersRequested}`,
    `snapshots=${s.snapshotsTaken}+${s.snapshotsInstalled}installed`,
    `faults: crashes=${s.crashes}(${s.crashesBeforeSend} before send)`,
    `partitions=${s.partitions}`,
    `wipes=${s.wipes}(${s.zombies} zombies, ${s.replacementsNormal} normal, ${s.fencesCommitted} fences)`,
    `fenced=${s.hostsFenced}`,
    `restores=${s.backupsRestored}`,
    `refused=${s.messagesRefused}`,
    `late=${s.messagesDelayedAcrossFence}`,
    `dropped=${s.messagesDropped}`,
    `duplicated=${s.messagesDuplicated}`,
    `delayed=${s.messagesDelayed}`,
    `of=${s.messagesSent}`,
    ...(result.digest === undefined ? [] : [`digest=${result.digest}`]),
  ].join(" ");
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        seed: { type: "string" },
        nodes: { type: "string" },
        ticks: { type: "string" },
        profile: { type: "string" },
        seeds: { type: "string" },
        bug: { type: "string", multiple: true },
        unsafe: { type: "string", multiple: true },
        "skip-check": { type: "string", multiple: true },
        verbose: { type: "boolean", default: false },
        digest: { type: "boolean", default: false },
        "digest-lines": { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
    });
  } catch (error: unknown) {
    fail(error instanceof Error ? error.message : String(error));
  }
})();

if (values.help) {
  console.log(usage);
  console.log(`Profiles: ${Object.keys(faultProfiles).join(", ")} (default ${defaultProfile})`);
  console.log(`Bugs (to prove the checks bite): ${bugNames.join(", ")}`);
  console.log(`Unsafe rules (core safety rules turned off): ${unsafeNames.join(", ")}`);
  console.log(`Checks that can be skipped: ${checkNames.join(", ")}`);
  process.exit(0);
}
const seed = integer("seed", values.seed, 1);
const nodes = integer("nodes", values.nodes, 3);
if (nodes !== 3 && nodes !== 5) fail(`Option --nodes must be 3 or 5, got "${values.nodes}"`);
const ticks = integer("ticks", values.ticks, defaultTicks);
const seeds = integer("seeds", values.seeds, 1);
const profile = values.profile ?? defaultProfile;
if (!(profile in faultProfiles)) {
  fail(`Unknown profile "${profile}"; expected one of ${Object.keys(faultProfiles).join(", ")}`);
}
const bugs: HarnessBugs = {};
for (const bug of values.bug ?? []) {
  if (!bugNames.includes(bug as BugName)) {
    fail(`Unknown bug "${bug}"; expected one of ${bugNames.join(", ")}`);
  }
  bugs[bug as BugName] = true;
}
const unsafe: UnsafeRules = {};
for (const rule of values.unsafe ?? []) {
  if (!unsafeNames.includes(rule as UnsafeName)) {
    fail(`Unknown unsafe rule "${rule}"; expected one of ${unsafeNames.join(", ")}`);
  }
  unsafe[rule as UnsafeName] = true;
}
const skipChecks: SkippedChecks = {};
for (const check of values["skip-check"] ?? []) {
  if (!checkNames.includes(check as CheckName)) {
    fail(`Unknown check "${check}"; expected one of ${checkNames.join(", ")}`);
  }
  skipChecks[check as CheckName] = true;
}

let failed = 0;
for (let i = 0; i < seeds; i++) {
  const options: SimOptions = {
    seed: seed + i,
    nodes,
    ticks,
    faults: faultProfiles[profile as ProfileName],
    profile,
    bugs,
    unsafe,
    skipChecks,
  };
  if (values.verbose) options.log = (line) => console.log(line);
  if (values.digest || values["digest-lines"]) options.digest = true;
  if (values["digest-lines"]) options.digestLines = (line) => console.log(`digest: ${line}`);
  const result = runSimulation(options);
  console.log(summary(options, result));
  if (!result.ok) {
    failed++;
    console.error(result.failure);
  }
}
if (seeds > 1) console.log(`${seeds - failed} of ${seeds} seeds passed`);
process.exit(failed > 0 ? 1 : 0);
