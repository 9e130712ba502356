// `keel drill failover`: a rehearsal of losing the leader that measures how long writes
// were unavailable. A probe writer PUTs a fresh value to keel-drill/probe every ~20 ms
// (to whichever member answers, with short timeouts) for the whole drill; then either the
// leader is asked to step down through the admin API, or (--kill) the operator kills it
// while the drill watches. The drill ends once another member leads and a write sent after
// that was acknowledged, or when --timeout runs out.
//
// The unavailability window is the longest stretch without an acknowledged probe write,
// from the last acknowledgement before the change (the step-down request, or the kill
// prompt) to the end of the drill.

import { adminPost } from "./admin.ts";
import {
  clientHeaders,
  CommandError,
  connectionOptions,
  fetchFailure,
  getJson,
  readApiError,
  resolveTarget,
  type StatusBody,
  type Target,
  trustingConfigCa,
} from "./client.ts";
import { CliError, Flags } from "./flags.ts";
import { fields, type Io, ms, writeJson } from "./output.ts";

/** drillTimeoutMsDefault bounds the watch for a new leader (after the change). */
export const drillTimeoutMsDefault = 30_000;
/** setupTimeoutMsMax bounds finding the leader and the first acknowledged probe write. */
const setupTimeoutMsMax = 5_000;
/** Probe writes start this often. */
const probeIntervalMs = 20;
/** One probe write gives up after this long. */
const probeTimeoutMs = 1_000;
/** At most this many probe writes are in flight; the writer skips a beat beyond it. */
const probesInFlightMax = 64;
/** Probing before the change, so there is a baseline of acknowledged writes. */
const baselineMs = 300;
/** Members' /status are polled this often while watching for the new leader. */
const watchIntervalMs = 100;
/** Each /status poll gives up after this long. */
const watchRequestTimeoutMs = 500;
/** Probing continues this long after recovery, so the tail of the window is seen. */
const tailMs = 100;

/** probeKey is the one key the drill writes. */
export const probeKey = "keel-drill/probe";

/** Clock gives milliseconds since an arbitrary start; injected so tests can drive it. */
export type Clock = () => number;

/** ProbeStats counts the probe writes of a drill. */
export interface ProbeStats {
  attempted: number;
  acknowledged: number;
  failed: number;
  /** Failures by reason: an error code ("not_leader", "timeout") or a network failure. */
  failures: Record<string, number>;
}

/**
 * ProbeWriter writes a unique value every probeIntervalMs to one member, moving on to the
 * leader an answer names or else to the next member when a write fails.
 */
export class ProbeWriter {
  readonly acks: number[] = [];
  readonly stats: ProbeStats = { attempted: 0, acknowledged: 0, failed: 0, failures: {} };
  #preferred: string;
  #inFlight = new Set<Promise<void>>();
  #running = false;
  #loop: Promise<void> | undefined;
  #seq = 0;

  constructor(
    private readonly urls: string[],
    preferred: string,
    private readonly clock: Clock,
    private readonly drillId: string,
    /** The client token's header, when the cluster requires one (security.client_token). */
    private readonly headers: Record<string, string> = {},
  ) {
    this.#preferred = preferred;
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  /** stop ends the writer and waits for the writes in flight (each bounded by its timeout). */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
    await Promise.all(this.#inFlight);
  }

  async #run(): Promise<void> {
    while (this.#running) {
      if (this.#inFlight.size < probesInFlightMax) {
        const probe = this.#probe().finally(() => this.#inFlight.delete(probe));
        this.#inFlight.add(probe);
      }
      await Bun.sleep(probeIntervalMs);
    }
  }

  async #probe(): Promise<void> {
    const url = this.#preferred;
    const value = `${this.drillId}:${++this.#seq}`;
    this.stats.attempted++;
    let reason: string;
    try {
      const response = await fetch(
        `${url}/v1/kv/${encodeURIComponent(probeKey)}`,
        trustingConfigCa({
          method: "PUT",
          body: value,
          headers: this.headers,
          signal: AbortSignal.timeout(probeTimeoutMs),
        }),
      );
      if (response.ok) {
        await response.body?.cancel();
        this.stats.acknowledged++;
        this.acks.push(this.clock());
        return;
      }
      const error = await readApiError(response);
      reason = error.code ?? `HTTP ${error.status}`;
      const leaderUrl = error.leader?.url.replace(/\/+$/, "");
      if (leaderUrl !== undefined && leaderUrl !== url) {
        this.#count(reason);
        this.#preferred = leaderUrl;
        return;
      }
    } catch (error: unknown) {
      reason = fetchFailure(error, probeTimeoutMs);
      if (reason.startsWith("no answer within")) reason = "timeout";
    }
    this.#count(reason);
    // Try another member next; a write reaching a follower is forwarded to the leader.
    if (this.#preferred === url) {
      const next = (this.urls.indexOf(url) + 1) % this.urls.length;
      this.#preferred = this.urls[next] ?? url;
    }
  }

  #count(reason: string): void {
    this.stats.failed++;
    this.stats.failures[reason] = (this.stats.failures[reason] ?? 0) + 1;
  }
}

/** Window is a stretch of time without an acknowledged write, in ms since drill start. */
export interface Window {
  fromMs: number;
  toMs: number;
}

/**
 * unavailability finds the longest stretch without an acknowledgement, starting from the
 * last one at or before changeAtMs and ending at the latest one. Undefined when nothing
 * was acknowledged before the change or after it.
 */
export function unavailability(acks: readonly number[], changeAtMs: number): Window | undefined {
  const sorted = [...acks].sort((a, b) => a - b);
  let start = -1;
  for (let i = 0; i < sorted.length; i++) if (sorted[i]! <= changeAtMs) start = i;
  if (start < 0 || start === sorted.length - 1) return undefined;
  let widest: Window = { fromMs: sorted[start]!, toMs: sorted[start + 1]! };
  for (let i = start + 1; i < sorted.length - 1; i++) {
    if (sorted[i + 1]! - sorted[i]! > widest.toMs - widest.fromMs) {
      widest = { fromMs: sorted[i]!, toMs: sorted[i + 1]! };
    }
  }
  return widest;
}

/** LeaderView is a leader as the drill saw it. */
export interface LeaderView {
  name: string;
  url: string;
  term: number;
}

/** DrillReport is what `keel drill failover --json` prints. */
export interface DrillReport {
  drill: "failover";
  mode: "step-down" | "kill";
  /** True when another member took over and writes were acknowledged again. */
  ok: boolean;
  /** Why not, when not ok. */
  problem: string | null;
  oldLeader: LeaderView;
  newLeader: LeaderView | null;
  /** Longest time without an acknowledged write around the change, or null if not measured. */
  unavailableMs: number | null;
  /** The window's ends, in ms since the drill started. */
  lastWriteBeforeMs: number | null;
  firstWriteAfterMs: number | null;
  /** When the step-down was requested or the kill prompt printed, ms since start. */
  changeAtMs: number;
  /** When the drill first saw another member lead, ms since start. */
  newLeaderSeenAtMs: number | null;
  probes: ProbeStats;
  /** How often a probe write starts: the resolution of unavailableMs. */
  probeIntervalMs: number;
  drillMs: number;
}

export const drillOptions = { ...connectionOptions, kill: { type: "boolean" } } as const;

/** drillCommand is `keel drill failover [--kill]`. */
export async function drillCommand(args: string[], io: Io): Promise<number> {
  const flags = new Flags(args, drillOptions);
  const [kind, ...extra] = flags.positionals;
  if (kind !== "failover") {
    throw new CliError(
      `keel drill needs a kind of drill: failover; got ${
        kind === undefined ? "nothing" : `"${kind}"`
      }`,
    );
  }
  if (extra.length > 0) {
    throw new CliError(`keel drill failover takes no more arguments; got "${extra[0]}"`);
  }
  const target = resolveTarget(flags, io, drillTimeoutMsDefault);
  const started = performance.now();
  const clock: Clock = () => Math.round(performance.now() - started);
  const report = await failoverDrill(
    target,
    flags.boolean("kill"),
    flags.boolean("json"),
    io,
    clock,
  );
  if (flags.boolean("json")) writeJson(io, report);
  else io.out(formatDrill(report));
  return report.ok ? 0 : 1;
}

/** failoverDrill runs the drill against the cluster target belongs to. */
export async function failoverDrill(
  target: Target,
  kill: boolean,
  json: boolean,
  io: Io,
  clock: Clock,
): Promise<DrillReport> {
  const setupMs = Math.min(setupTimeoutMsMax, target.timeoutMs);
  const setupDeadline = clock() + setupMs;
  const first = await getJson<StatusBody>(target.url, "/status", Math.min(2_000, target.timeoutMs));
  const members = first.members.map((m) => ({
    name: m.name,
    url: (m.http ?? "").replace(/\/+$/, ""),
  }))
    .filter((m) => m.url !== "");
  if (members.length === 0) {
    throw new CommandError(`${target.url}/status lists no member http addresses`);
  }
  const oldLeader = await findLeader(members, undefined, setupDeadline, clock);
  if (oldLeader === undefined) {
    throw new CommandError(
      `No leader within ${ms(setupMs)}: there is nothing to fail over`,
    );
  }

  const drillId = `drill-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const writer = new ProbeWriter(
    members.map((m) => m.url),
    oldLeader.url,
    clock,
    drillId,
    clientHeaders(target),
  );
  writer.start();
  const report: DrillReport = {
    drill: "failover",
    mode: kill ? "kill" : "step-down",
    ok: false,
    problem: null,
    oldLeader,
    newLeader: null,
    unavailableMs: null,
    lastWriteBeforeMs: null,
    firstWriteAfterMs: null,
    changeAtMs: 0,
    newLeaderSeenAtMs: null,
    probes: writer.stats,
    probeIntervalMs,
    drillMs: 0,
  };
  try {
    // A baseline: the cluster takes writes before the change, or there is nothing to measure.
    const writerStartedAt = clock();
    while (clock() < setupDeadline) {
      if (writer.acks.length > 0 && clock() - writerStartedAt >= baselineMs) break;
      await Bun.sleep(probeIntervalMs);
    }
    if (writer.acks.length === 0) {
      report.problem = `No probe write was acknowledged within ${
        ms(setupMs)
      } before the drill: the cluster is not taking writes`;
      return report;
    }

    report.changeAtMs = clock();
    const watchDeadline = report.changeAtMs + target.timeoutMs;
    // The step-down answer comes once another member leads; the watch sees that as well.
    let stepDownError: unknown;
    let stepDown: Promise<void> = Promise.resolve();
    if (kill) {
      const prompt =
        `kill the leader (${oldLeader.name} at ${oldLeader.url}) now; watching for up to ${
          Math.round(target.timeoutMs / 1000)
        } s\n`;
      if (json) io.err(prompt);
      else io.out(prompt);
    } else {
      stepDown = adminPost(
        { ...target, url: oldLeader.url },
        "/admin/step-down",
        undefined,
        io,
        { followLeader: true, quiet: json },
      ).then(() => {}, (error: unknown) => {
        stepDownError = error;
      });
    }
    const newLeader = await findLeader(
      members,
      oldLeader,
      watchDeadline,
      clock,
      () => stepDownError !== undefined,
    );
    await stepDown;
    if (newLeader === undefined) {
      // A refused step-down (no token, wrong token) is the answer the operator needs.
      if (stepDownError !== undefined) throw stepDownError;
      report.problem = `No other member became leader within ${ms(target.timeoutMs)}`;
      return report;
    }
    report.newLeader = newLeader;
    report.newLeaderSeenAtMs = clock();
    while (clock() < watchDeadline) {
      if (writer.acks.some((at) => at >= report.newLeaderSeenAtMs!)) break;
      await Bun.sleep(probeIntervalMs);
    }
    await Bun.sleep(tailMs);
    if (!writer.acks.some((at) => at >= report.newLeaderSeenAtMs!)) {
      report.problem = `${newLeader.name} leads, but no write was acknowledged within ${
        ms(target.timeoutMs)
      }`;
    }
    return report;
  } finally {
    await writer.stop();
    const window = unavailability(writer.acks, report.changeAtMs);
    if (window !== undefined && report.changeAtMs > 0) {
      report.unavailableMs = window.toMs - window.fromMs;
      report.lastWriteBeforeMs = window.fromMs;
      report.firstWriteAfterMs = window.toMs;
    }
    report.ok = report.newLeader !== null && report.problem === null &&
      report.unavailableMs !== null;
    report.drillMs = clock();
  }
}

/**
 * findLeader polls every member's /status until one that is not `other` says it leads (its
 * own role, in a term past other's), or the deadline passes.
 */
async function findLeader(
  members: { name: string; url: string }[],
  other: LeaderView | undefined,
  deadlineMs: number,
  clock: Clock,
  giveUp: () => boolean = () => false,
): Promise<LeaderView | undefined> {
  while (!giveUp()) {
    const statuses = await Promise.all(members.map(async (m) => {
      try {
        return {
          url: m.url,
          status: await getJson<StatusBody>(m.url, "/status", watchRequestTimeoutMs),
        };
      } catch (error: unknown) {
        if (error instanceof CommandError) return undefined;
        throw error;
      }
    }));
    const leaders = statuses.filter((s): s is { url: string; status: StatusBody } =>
      s !== undefined && s.status.role === "leader" && s.status.name !== other?.name &&
      (other === undefined || s.status.term > other.term)
    );
    // Two self-declared leaders (an old one in a stale term): the highest term wins.
    leaders.sort((a, b) => b.status.term - a.status.term);
    const found = leaders[0];
    if (found !== undefined) {
      return { name: found.status.name, url: found.url, term: found.status.term };
    }
    if (clock() + watchIntervalMs > deadlineMs) return undefined;
    await Bun.sleep(watchIntervalMs);
  }
  return undefined;
}

/** formatDrill renders a drill report for people. */
export function formatDrill(report: DrillReport): string {
  const at = (value: number | null) => value === null ? "?" : `+${ms(value)}`;
  const leader = (view: LeaderView) => `${view.name} (${view.url}), term ${view.term}`;
  const failures = Object.entries(report.probes.failures).sort((a, b) => b[1] - a[1])
    .map(([reason, count]) => `${reason} ${count}`).join(", ");
  const lines: [string, string][] = [
    ["old leader", leader(report.oldLeader)],
    ["new leader", report.newLeader === null ? "none" : leader(report.newLeader)],
    [
      "unavailable",
      report.unavailableMs === null
        ? "not measured"
        : `${ms(report.unavailableMs)} (no write acknowledged from ${
          at(report.lastWriteBeforeMs)
        } to ${at(report.firstWriteAfterMs)})`,
    ],
  ];
  if (report.newLeaderSeenAtMs !== null) {
    lines.push([
      "leader change",
      `seen ${ms(report.newLeaderSeenAtMs - report.changeAtMs)} after the ${
        report.mode === "kill" ? "kill prompt" : "step-down request"
      }`,
    ]);
  }
  lines.push(
    [
      "probe writes",
      `${report.probes.attempted} attempted (one every ${
        ms(report.probeIntervalMs)
      }), ${report.probes.acknowledged} acknowledged, ${report.probes.failed} failed${
        failures === "" ? "" : ` (${failures})`
      }`,
    ],
    ["drill time", ms(report.drillMs)],
  );
  const verdict = report.ok ? "ok" : `FAILED: ${report.problem ?? "no failover measured"}`;
  return `failover drill (${report.mode})\n` + fields(lines) + verdict + "\n";
}
