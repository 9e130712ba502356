// keel version: what this binary is and what it speaks, for people and (--json) for
// scripts and inventories. Everything here is fixed when the binary is built.

import { schemaVersion } from "../storage/schema.ts";
import { formatProtocols, protocolVersions } from "../transport/handshake.ts";
import { buildTarget, buildTime, commit, commitDirty, version } from "../version.ts";

/** VersionInfo is `keel version --json`. */
export interface VersionInfo {
  version: string;
  commit: string;
  /** The build's inputs had uncommitted changes (the binary is commit + those changes). */
  commitDirty: boolean;
  buildTime: string;
  /** The bun build --target, e.g. "bun-linux-x64-baseline". */
  target: string;
  /** The Bun runtime inside the binary. */
  bun: string;
  /** The peer protocol versions this binary speaks, lowest and highest. */
  protocol: { min: number; max: number };
  /** The data-dir (SQLite) schema version this binary writes; it migrates older ones forward. */
  schemaVersion: number;
}

/** versionInfo describes this binary. */
export function versionInfo(): VersionInfo {
  return {
    version,
    commit,
    commitDirty,
    buildTime,
    target: buildTarget,
    bun: Bun.version,
    protocol: { min: protocolVersions.min, max: protocolVersions.max },
    schemaVersion,
  };
}

/**
 * formatVersion is the text of `keel version`: one line that starts "keel <version>", so
 * that scripts reading the first word pair keep working.
 */
export function formatVersion(info: VersionInfo): string {
  const protocols = formatProtocols(info.protocol);
  const commitText = info.commitDirty ? `${info.commit}+uncommitted` : info.commit;
  return `keel ${info.version} (commit ${commitText}, built ${info.buildTime}, ` +
    `${info.target}, bun ${info.bun}, protocol ${protocols}, schema ${info.schemaVersion})\n`;
}
