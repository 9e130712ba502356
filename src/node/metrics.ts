// The node's Prometheus metrics: gauges and counters read from the node when /metrics is
// scraped, and the histograms the loop observes. Names are keel_*, in base units.

import type { Raft } from "../consensus/raft.ts";
import type { IntegrityView, NodeCounters } from "../http/api.ts";
import type { Histogram, Registry } from "../lib/metrics.ts";
import type { NodeStorage } from "../storage/storage.ts";
import type { Transport } from "../transport/transport.ts";

/** NodeMetricsSource is what the metrics read from the node, at scrape time. */
export interface NodeMetricsSource {
  raft: Raft;
  counters: NodeCounters;
  storage: Pick<NodeStorage, "latestSnapshot" | "sizeBytes">;
  host: { readonly timerCount: number; readonly timeMs: number };
  transport: Pick<Transport, "links">;
  appliedIndex(): number;
  pendingWrites(): number;
  suspended(): boolean;
  startedAt: number;
  integrity(): IntegrityView;
}

/** NodeHistograms are observed by the loop as things happen. */
export interface NodeHistograms {
  fsyncSeconds: Histogram;
  commitSeconds: Histogram;
  snapshotSeconds: Histogram;
  applySeconds: Histogram;
}

/** nodeHistograms registers the loop's histograms. */
export function nodeHistograms(r: Registry): NodeHistograms {
  return {
    fsyncSeconds: r.histogram(
      "keel_fsync_seconds",
      "Duration of one fdatasync of the log (it covers every write made before it)",
    ),
    commitSeconds: r.histogram(
      "keel_append_seconds",
      "Leader: time from proposal to applied, per client write",
    ),
    snapshotSeconds: r.histogram(
      "keel_snapshot_seconds",
      "Time a snapshot paused the node (serializing the state; it is written off the loop)",
    ),
    applySeconds: r.histogram(
      "keel_apply_seconds",
      "Duration of applying one entry to the service (apply or onTimer)",
    ),
  };
}

/** registerNodeGauges registers the gauges and counters read at scrape time. */
export function registerNodeGauges(r: Registry, node: NodeMetricsSource): void {
  const raft = node.raft;
  r.gauge("keel_term", "Current Raft term", () => [[{}, raft.term]]);
  r.gauge(
    "keel_commit_index",
    "Highest log index known committed",
    () => [[{}, raft.commitIndex]],
  );
  r.gauge(
    "keel_applied_index",
    "Highest log index applied to the service",
    () => [[{}, node.appliedIndex()]],
  );
  r.gauge("keel_last_index", "Last index in the local log", () => [[{}, raft.lastIndex]]);
  r.gauge(
    "keel_role",
    "1 for this node's current role",
    () =>
      (["follower", "preCandidate", "candidate", "leader"] as const).map((
        role,
      ) => [{ role }, raft.role === role ? 1 : 0]),
  );
  r.counter(
    "keel_leader_changes_total",
    "Times this node saw a new leader",
    () => [[{}, node.counters.leaderChanges]],
  );
  r.counter(
    "keel_elections_started_total",
    "Elections this node started as candidate",
    () => [[{}, node.counters.electionsStarted]],
  );
  r.counter(
    "keel_proposals_total",
    "Client writes proposed on this node as leader",
    () => [[{}, node.counters.proposals]],
  );
  r.counter(
    "keel_reads_served_total",
    "Linearizable reads served",
    () => [[{}, node.counters.readsServed]],
  );
  r.counter(
    "keel_messages_sent_total",
    "Peer messages sent",
    () => [[{}, node.counters.messagesSent]],
  );
  r.counter(
    "keel_messages_received_total",
    "Peer messages received",
    () => [[{}, node.counters.messagesReceived]],
  );
  r.counter(
    "keel_snapshots_taken_total",
    "Snapshots taken",
    () => [[{}, node.counters.snapshotsTaken]],
  );
  r.counter(
    "keel_snapshots_installed_total",
    "Snapshots received from a leader and installed",
    () => [[{}, node.counters.snapshotsInstalled]],
  );
  r.gauge(
    "keel_snapshot_bytes",
    "Size of the latest snapshot",
    () => [[{}, node.storage.latestSnapshot()?.bytes ?? 0]],
  );
  r.gauge(
    "keel_service_timers",
    "Cluster timers scheduled by the service",
    () => [[{}, node.host.timerCount]],
  );
  r.gauge(
    "keel_service_time_seconds",
    "The log's time as of the last applied entry (seconds since the epoch)",
    () => [[{}, node.host.timeMs / 1000]],
  );
  r.counter(
    "keel_service_errors_total",
    "Entries whose apply or onTimer threw (rolled back and answered with an error)",
    () => [[{}, node.counters.serviceErrors]],
  );
  r.counter(
    "keel_timers_fired_total",
    "Cluster timers fired (onTimer called) on this node",
    () => [[{}, node.counters.timersFired]],
  );
  r.gauge(
    "keel_snapshot_index",
    "Log index of the latest snapshot",
    () => [[{}, node.storage.latestSnapshot()?.index ?? 0]],
  );
  r.gauge(
    "keel_storage_bytes",
    "Database and WAL size on disk",
    () => [[{}, node.storage.sizeBytes()]],
  );
  r.gauge("keel_peer_lag_entries", "Leader: entries a follower is behind", () => {
    const progress = raft.status().progress;
    return Object.entries(progress).map((
      [peer, p],
    ) => [{ peer }, Math.max(0, raft.lastIndex - p.matchIndex)]);
  });
  r.gauge(
    "keel_peer_connected",
    "1 when the outbound link to a peer is up",
    () => node.transport.links().map((link) => [{ peer: link.name }, link.connected ? 1 : 0]),
  );
  r.counter(
    "keel_peer_dropped_messages_total",
    "Messages dropped because a peer's queue was full",
    () => node.transport.links().map((link) => [{ peer: link.name }, link.droppedMessages]),
  );
  r.gauge(
    "keel_pending_writes",
    "Client writes waiting to commit",
    () => [[{}, node.pendingWrites()]],
  );
  r.gauge(
    "keel_suspended",
    "1 while client writes are suspended",
    () => [[{}, node.suspended() ? 1 : 0]],
  );
  r.gauge(
    "keel_process_resident_memory_bytes",
    "Resident set size of the process",
    () => [[{}, process.memoryUsage.rss()]],
  );
  r.gauge(
    "keel_uptime_seconds",
    "Seconds since the node started",
    () => [[{}, (Date.now() - node.startedAt) / 1000]],
  );
  r.counter(
    "keel_scrub_passes_total",
    "Full scrub passes over the data dir (the log, hard state, meta, snapshot)",
    () => [[{}, node.integrity().passesCompleted]],
  );
  r.counter(
    "keel_scrub_bytes_verified_total",
    "Bytes the scrubber re-read and verified against their checksums",
    () => [[{}, node.integrity().bytesVerified]],
  );
  r.gauge(
    "keel_scrub_last_pass_timestamp_seconds",
    "When the last full scrub pass ended (seconds since the epoch; 0 before the first)",
    () => [[{}, (node.integrity().lastFullPassAt ?? 0) / 1000]],
  );
  r.counter(
    "keel_storage_corruptions_total",
    "Stored records that failed their checksums, by kind (found by reads and by scrubbing)",
    () => {
      const found = node.integrity().corruptionsFound;
      return ["log-entry", "hard-state", "meta", "snapshot", "snapshot-chunk"].map((kind) => [
        { kind },
        found[kind] ?? 0,
      ]);
    },
  );
}
