// What this build of keel is: the release (package.json) and what the build baked in.
// `make build` and `make release` pass the commit, the build time and the target to
// `bun build --define`; run from source (bun test, bun src/main.ts) nothing is baked in and
// they read "unknown" (commit, build time) and the platform this runs on (target).

import packageJson from "../package.json" with { type: "json" };

// Replaced by `bun build --define NAME='"value"'`; undeclared (so undefined at typeof) when
// nobody defined them.
declare const KEEL_BUILD_COMMIT: string | undefined;
declare const KEEL_BUILD_DIRTY: string | undefined;
declare const KEEL_BUILD_TIME: string | undefined;
declare const KEEL_BUILD_TARGET: string | undefined;

/** version is keel's release, from package.json (bundled into the binary at build). */
export const version: string = packageJson.version;

/**
 * commit is the short git commit the binary was built from, or "unknown" (built outside
 * a git checkout, or run from source).
 */
export const commit: string = typeof KEEL_BUILD_COMMIT === "string" && KEEL_BUILD_COMMIT !== ""
  ? KEEL_BUILD_COMMIT
  : "unknown";

/**
 * commitDirty is true when the build's inputs (src/, package.json, the lockfile) had
 * changes not committed: the binary is then the commit plus those changes.
 */
export const commitDirty: boolean = typeof KEEL_BUILD_DIRTY === "string" &&
  KEEL_BUILD_DIRTY === "true";

/** buildTime is when the binary was built (ISO 8601, UTC), or "unknown". */
export const buildTime: string = typeof KEEL_BUILD_TIME === "string" && KEEL_BUILD_TIME !== ""
  ? KEEL_BUILD_TIME
  : "unknown";

/**
 * buildTarget is the `bun build --target` the binary was compiled for ("bun-linux-x64",
 * "bun-linux-x64-baseline", "bun-linux-arm64"), or "bun-<platform>-<arch>" of the host
 * when none was named.
 */
export const buildTarget: string = typeof KEEL_BUILD_TARGET === "string" &&
    KEEL_BUILD_TARGET !== ""
  ? KEEL_BUILD_TARGET
  : `bun-${process.platform}-${process.arch}`;
