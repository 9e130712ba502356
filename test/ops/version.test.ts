// What the compiled binary says it is: `dist/keel version` and `--version --json` name the
// release, the commit it was built from, the build time, the target, the Bun runtime, the
// peer protocol versions and the data-dir schema version, all baked in by `make build`.
// (`make release` builds the same way for three targets; CI runs it and the x64 binary's
// --version, .ci/run.)

import { expect, test } from "bun:test";
import packageJson from "../../package.json" with { type: "json" };
import { schemaVersion } from "../../src/storage/schema.ts";
import { protocolVersion } from "../../src/transport/handshake.ts";
import { binaryPath, requireBinary } from "../support/cluster.ts";

interface VersionJson {
  version: string;
  commit: string;
  commitDirty: boolean;
  buildTime: string;
  target: string;
  bun: string;
  protocol: { min: number; max: number };
  schemaVersion: number;
}

function keel(...args: string[]): string {
  requireBinary();
  const run = Bun.spawnSync([binaryPath, ...args], { stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) {
    throw new Error(`keel ${args.join(" ")} exited ${run.exitCode}: ${run.stderr.toString()}`);
  }
  return run.stdout.toString();
}

/** git runs git here: the number it prints, or its exit code when it prints none. */
function git(...args: string[]): number {
  const run = Bun.spawnSync(["git", ...args], { cwd: import.meta.dir, stdout: "pipe" });
  const text = run.stdout.toString().trim();
  return text === "" ? run.exitCode : Number(text);
}

/** headCommit is `git rev-parse --short HEAD` of this checkout, or undefined outside git. */
function headCommit(): string | undefined {
  const run = Bun.spawnSync(["git", "rev-parse", "--short", "HEAD"], {
    cwd: import.meta.dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  return run.exitCode === 0 ? run.stdout.toString().trim() : undefined;
}

test("keel --version --json names the release, commit, build, runtime and versions spoken", () => {
  const info = JSON.parse(keel("--version", "--json")) as VersionJson;
  expect(Object.keys(info).sort()).toEqual(
    [
      "buildTime",
      "bun",
      "commit",
      "commitDirty",
      "protocol",
      "schemaVersion",
      "target",
      "version",
    ],
  );
  expect(info.version).toBe(packageJson.version);
  expect(info.bun).toMatch(/^\d+\.\d+\.\d+/);
  expect(info.target).toBe(`bun-${process.platform}-${process.arch}`);
  expect(info.protocol.max).toBe(protocolVersion);
  expect(info.protocol.min).toBeLessThanOrEqual(info.protocol.max);
  expect(info.schemaVersion).toBe(schemaVersion);
  expect(typeof info.commitDirty).toBe("boolean");
  // A build time baked in by make build, in UTC, not in the future.
  expect(info.buildTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  expect(Date.parse(info.buildTime)).toBeLessThanOrEqual(Date.now() + 60_000);

  const head = headCommit();
  if (head === undefined) {
    // Built from a source tarball: make build has no commit to bake in.
    expect(info.commit).toBe("unknown");
  } else if (Date.parse(info.buildTime) >= git("log", "-1", "--format=%ct") * 1000) {
    // Built after HEAD was committed: it is HEAD (make build, and so make test, rebuilds
    // dist/keel whenever HEAD moves: dist/.build-commit).
    expect(info.commit).toBe(head);
  } else {
    // A dist/keel built before the last commit (bun test run without make build): its
    // commit must still be one of this history's.
    expect(git("merge-base", "--is-ancestor", info.commit, "HEAD"), "ancestor of HEAD").toBe(0);
  }
});

test("keel version prints the same on one line that starts with keel <version>", () => {
  const info = JSON.parse(keel("version", "--json")) as VersionJson;
  const text = keel("version");
  expect(text.split("\n")).toEqual([expect.stringMatching(/^keel \d+\.\d+\.\d+ \(/), ""]);
  expect(text.startsWith(`keel ${info.version} (commit ${info.commit}`)).toBe(true);
  for (
    const part of [
      `built ${info.buildTime}`,
      info.target,
      `bun ${info.bun}`,
      info.protocol.min === info.protocol.max
        ? `protocol ${info.protocol.max}`
        : `protocol ${info.protocol.min}-${info.protocol.max}`,
      `schema ${info.schemaVersion}`,
    ]
  ) {
    expect(text).toContain(part);
  }
  expect(keel("--version")).toBe(text);
  expect(keel("-v")).toBe(text);
});
