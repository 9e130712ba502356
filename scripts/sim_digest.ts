// sim_digest reads, writes and compares files of simulator trace digests (one line per
// seed: `profile nodes seed ok|FAILED digest`, see test/sim/digest.ts). scripts/sim_long.ts
// writes them (--digest-out) and compares a run against one (--digest-compare); run alone
// it compares two files written earlier:
//
//   bun scripts/sim_digest.ts REFERENCE CURRENT
//
// Every seed of CURRENT must be in REFERENCE with the same status and digest (REFERENCE may
// hold more seeds). Exit code 0 when all match, 1 when any differ or are missing, 2 on bad
// arguments or files.

import { readFileSync } from "node:fs";

/** DigestLine is one seed's outcome and trace digest. */
export interface DigestLine {
  profile: string;
  nodes: number;
  seed: number;
  ok: boolean;
  digest: string;
}

/** digestKey names a run: the same profile, node count and seed replay the same run. */
export function digestKey(line: Pick<DigestLine, "profile" | "nodes" | "seed">): string {
  return `${line.profile} ${line.nodes} ${line.seed}`;
}

/** formatDigests is the file's text: lines sorted by profile, then node count, then seed. */
export function formatDigests(lines: readonly DigestLine[]): string {
  const sorted = lines.slice().sort((a, b) =>
    a.profile < b.profile ? -1 : a.profile > b.profile ? 1 : a.nodes - b.nodes || a.seed - b.seed
  );
  return sorted.map((line) => `${digestKey(line)} ${line.ok ? "ok" : "FAILED"} ${line.digest}\n`)
    .join("");
}

/** parseDigests reads a file's text; throws a SyntaxError naming the first bad line. */
export function parseDigests(text: string, name: string): Map<string, DigestLine> {
  const out = new Map<string, DigestLine>();
  const rows = text.split("\n");
  rows.forEach((row, i) => {
    if (row.trim() === "") return;
    const [profile, nodes, seed, status, digest, extra] = row.trim().split(/\s+/);
    if (
      profile === undefined || !/^\d+$/.test(nodes ?? "") || !/^\d+$/.test(seed ?? "") ||
      (status !== "ok" && status !== "FAILED") || !/^[0-9a-f]{16}$/.test(digest ?? "") ||
      extra !== undefined
    ) {
      throw new SyntaxError(
        `${name}:${i + 1}: expected "profile nodes seed ok|FAILED digest", got "${row}"`,
      );
    }
    const line = { profile, nodes: Number(nodes), seed: Number(seed), ok: status === "ok", digest };
    out.set(digestKey(line), line as DigestLine);
  });
  return out;
}

/** readDigests reads a digest file (see parseDigests). */
export function readDigests(path: string): Map<string, DigestLine> {
  return parseDigests(readFileSync(path, "utf8"), path);
}

/** DigestComparison is how a run's digests compare with a reference's. */
export interface DigestComparison {
  compared: number;
  /** Seeds whose status or digest differ: [reference, current]. */
  differ: [DigestLine, DigestLine][];
  /** Seeds of the run the reference does not hold. */
  missing: DigestLine[];
}

export function compareDigests(
  reference: ReadonlyMap<string, DigestLine>,
  current: Iterable<DigestLine>,
): DigestComparison {
  const result: DigestComparison = { compared: 0, differ: [], missing: [] };
  for (const line of current) {
    const before = reference.get(digestKey(line));
    if (before === undefined) {
      result.missing.push(line);
      continue;
    }
    result.compared++;
    if (before.ok !== line.ok || before.digest !== line.digest) result.differ.push([before, line]);
  }
  return result;
}

/**
 * reportComparison prints each seed that differs (with the commands that print its trace
 * lines, to diff in both trees) and a summary; returns whether everything matched.
 */
export function reportComparison(comparison: DigestComparison, referenceName: string): boolean {
  const status = (line: DigestLine) => `${line.ok ? "ok" : "FAILED"} ${line.digest}`;
  const sorted = comparison.differ.slice().sort(([a], [b]) =>
    formatDigests([a]) < formatDigests([b]) ? -1 : 1
  );
  for (const [before, now] of sorted) {
    console.log(
      `digest differs: profile=${now.profile} nodes=${now.nodes} seed=${now.seed}: ` +
        `${referenceName} ${status(before)}, now ${status(now)}; trace: bun scripts/sim.ts ` +
        `--seed=${now.seed} --profile=${now.profile} --nodes=${now.nodes} --digest-lines`,
    );
  }
  for (const line of comparison.missing.slice(0, 10)) {
    console.log(`not in ${referenceName}: ${digestKey(line)}`);
  }
  if (comparison.missing.length > 10) {
    console.log(`... and ${comparison.missing.length - 10} more seeds not in ${referenceName}`);
  }
  const same = comparison.compared - comparison.differ.length;
  console.log(
    `digests: ${same} of ${comparison.compared} seeds match ${referenceName}, ` +
      `${comparison.differ.length} differ, ${comparison.missing.length} not in it`,
  );
  return comparison.compared > 0 && comparison.differ.length === 0 &&
    comparison.missing.length === 0;
}

if (import.meta.main) {
  const [referencePath, currentPath, extra] = process.argv.slice(2);
  if (referencePath === undefined || currentPath === undefined || extra !== undefined) {
    console.error("Usage: bun scripts/sim_digest.ts REFERENCE CURRENT");
    process.exit(2);
  }
  let reference: Map<string, DigestLine>;
  let current: Map<string, DigestLine>;
  try {
    reference = readDigests(referencePath);
    current = readDigests(currentPath);
  } catch (error: unknown) {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(2);
  }
  const ok = reportComparison(compareDigests(reference, current.values()), referencePath);
  process.exit(ok ? 0 : 1);
}
