import { createHash } from "node:crypto";
import { formatEndpoint } from "./endpoint.ts";
import type { Config } from "./types.ts";

/**
 * Every node of a cluster must agree on the cluster-defining settings: the cluster name,
 * the member list (names and endpoints, in order) and the Raft timing. Peers exchange the
 * fields below in their handshake; a mismatch is refused with the names of the fields
 * that differ. Settings local to one host (storage.dir, log, http limits, resolver,
 * security) may differ between nodes and are left out.
 */

/** fingerprintLength is the number of hex characters in a fingerprint (64 bits). */
export const fingerprintLength = 16;

/**
 * fingerprintFields maps each cluster-defining field, by its path in the file, to a
 * stable string of its value. Scalars are shown as they are (timings in whole ms, so the
 * spelling in the file does not matter); the member list, which can be long, is a hash.
 */
export function fingerprintFields(config: Config): Record<string, string> {
  // A gossip-addressed member counts by its name and that it is found by gossip: the
  // addresses gossip learns change with every host replacement and are not part of it.
  const members = config.members
    .map((member) =>
      member.peer === undefined || member.http === undefined
        ? `${member.name} gossip`
        : `${member.name} ${formatEndpoint(member.peer)} ${formatEndpoint(member.http)}`
    )
    .join("\n");
  return {
    cluster_name: config.clusterName,
    members: `sha256:${sha256Hex(members).slice(0, fingerprintLength)}`,
    "raft.tick": `${config.raft.tickMs}ms`,
    "raft.heartbeat_interval": `${config.raft.heartbeatIntervalMs}ms`,
    "raft.election_timeout": `${config.raft.electionTimeoutMs}ms`,
    "raft.snapshot_entries": String(config.raft.snapshotEntries),
  };
}

/**
 * fingerprint is a short hex digest of the cluster-defining fields, for logs, `keel
 * check-config` and a quick equality check in the handshake.
 */
export function fingerprint(config: Config): string {
  const fields = Object.entries(fingerprintFields(config))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // JSON keeps the encoding unambiguous whatever characters a value holds.
  return sha256Hex(JSON.stringify(fields)).slice(0, fingerprintLength);
}

/**
 * differingFields names, sorted, the fields whose values differ or that only one side
 * has. Either side may come from a peer, so only own properties count.
 */
export function differingFields(
  a: Readonly<Record<string, string>>,
  b: Readonly<Record<string, string>>,
): string[] {
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...names]
    .filter((name) => !Object.hasOwn(a, name) || !Object.hasOwn(b, name) || a[name] !== b[name])
    .sort();
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}
