// `keel members`: every member's own view, side by side. The member list comes from the
// first node's /status (or the --config file when that node cannot be reached); then each
// member is asked for its /status and /readyz with a short timeout, all at once.

import {
  CommandError,
  connectionOptions,
  getJson,
  memberHttpUrl,
  resolveTarget,
  type StatusBody,
  trustingConfigCa,
} from "./client.ts";
import { CliError, Flags } from "./flags.ts";
import { dash, type Io, plural, table, writeJson } from "./output.ts";

/** memberTimeoutMsDefault bounds each request to each member. */
export const memberTimeoutMsDefault = 2_000;

/** ReadinessCheck is one entry of /readyz's check list. */
export interface ReadinessCheck {
  name: string;
  ok: boolean;
  detail?: string;
}

/** MemberView is one row of `keel members`, as printed with --json. */
export interface MemberView {
  name: string;
  url: string;
  reachable: boolean;
  /** Why the member could not be asked, when it could not. */
  error: string | null;
  role: string | null;
  term: number | null;
  leader: string | null;
  commitIndex: number | null;
  appliedIndex: number | null;
  lastIndex: number | null;
  /** 200 from /readyz; null when readiness could not be read. */
  ready: boolean | null;
  failingChecks: string[];
  checks: ReadinessCheck[];
}

/** MembersReport is the whole `keel members --json` output. */
export interface MembersReport {
  members: MemberView[];
  /** The leader every reachable member names, or null when none is known or they differ. */
  leader: string | null;
  term: number | null;
  /** False when reachable members name different leaders. */
  agreed: boolean;
}

/** gatherMembers asks every member for its status and readiness. */
export async function gatherMembers(
  base: string,
  fallback: { name: string; url: string }[] | undefined,
  timeoutMs: number,
): Promise<MembersReport> {
  let list: { name: string; url: string }[];
  try {
    const first = await getJson<StatusBody>(base, "/status", timeoutMs);
    list = first.members.map((m) => ({
      name: m.name,
      url: m.http ?? fallback?.find((f) => f.name === m.name)?.url ?? "",
    }));
  } catch (error: unknown) {
    if (!(error instanceof CommandError)) throw error;
    if (fallback === undefined) {
      throw new CommandError(
        `${error.message}\n(with --config FILE the members are listed from the file instead)`,
      );
    }
    list = fallback;
  }
  const members = await Promise.all(list.map((m) => askMember(m.name, m.url, timeoutMs)));
  const leaders = new Set(members.filter((m) => m.reachable).map((m) => m.leader));
  const leader = leaders.size === 1 ? [...leaders][0] ?? null : null;
  const leaderView = members.find((m) => m.name === leader && m.role === "leader");
  return {
    members,
    leader,
    term: leaderView?.term ?? null,
    agreed: leaders.size <= 1,
  };
}

async function askMember(name: string, url: string, timeoutMs: number): Promise<MemberView> {
  const view: MemberView = {
    name,
    url,
    reachable: false,
    error: null,
    role: null,
    term: null,
    leader: null,
    commitIndex: null,
    appliedIndex: null,
    lastIndex: null,
    ready: null,
    failingChecks: [],
    checks: [],
  };
  if (url === "") {
    view.error = "no http address known";
    return view;
  }
  const [status, readiness] = await Promise.all([
    getJson<StatusBody>(url, "/status", timeoutMs).then(
      (body) => ({ ok: true as const, body }),
      (error: unknown) => ({ ok: false as const, error }),
    ),
    readReadiness(url, timeoutMs),
  ]);
  if (status.ok) {
    view.reachable = true;
    view.role = status.body.role;
    view.term = status.body.term;
    view.leader = status.body.leader;
    view.commitIndex = status.body.commitIndex;
    view.appliedIndex = status.body.appliedIndex;
    view.lastIndex = status.body.lastIndex;
  } else {
    view.error = status.error instanceof Error ? status.error.message : String(status.error);
  }
  if (readiness !== undefined) {
    view.ready = readiness.ready;
    view.checks = readiness.checks;
    view.failingChecks = readiness.checks.filter((c) => !c.ok).map((c) => c.name);
  }
  return view;
}

/**
 * readReadiness reads GET /readyz?verbose: 200 is ready, 503 not ready; the body lists the
 * checks. Undefined when the node did not answer either way.
 */
async function readReadiness(
  url: string,
  timeoutMs: number,
): Promise<{ ready: boolean; checks: ReadinessCheck[] } | undefined> {
  let response: Response;
  try {
    response = await fetch(
      `${url}/readyz?verbose`,
      trustingConfigCa({ signal: AbortSignal.timeout(timeoutMs) }),
    );
  } catch {
    return undefined;
  }
  if (response.status !== 200 && response.status !== 503) {
    await response.body?.cancel();
    return undefined;
  }
  let checks: ReadinessCheck[] = [];
  try {
    const body = await response.json() as { checks?: unknown };
    if (Array.isArray(body.checks)) {
      checks = body.checks.filter((c): c is ReadinessCheck =>
        typeof c === "object" && c !== null && typeof (c as ReadinessCheck).name === "string" &&
        typeof (c as ReadinessCheck).ok === "boolean"
      );
    }
  } catch {
    // No JSON: the status code alone says it.
  }
  return { ready: response.status === 200, checks };
}

/** formatMembers renders the report for people: a table, then a one-line verdict. */
export function formatMembers(report: MembersReport): string {
  const rows = [[
    "MEMBER",
    "ADDRESS",
    "REACHABLE",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "READINESS",
  ]];
  for (const m of report.members) {
    rows.push([
      m.name,
      m.url || "-",
      m.reachable ? "yes" : `no (${shortError(m.error)})`,
      dash(m.role),
      dash(m.term),
      m.reachable ? m.leader ?? "none" : "-",
      dash(m.commitIndex),
      dash(m.appliedIndex),
      m.ready === null
        ? "-"
        : m.ready
        ? "ready"
        : `not ready${m.failingChecks.length > 0 ? `: ${m.failingChecks.join(", ")}` : ""}`,
    ]);
  }
  const reachable = report.members.filter((m) => m.reachable).length;
  const ready = report.members.filter((m) => m.ready === true).length;
  const readiness = report.members.some((m) => m.ready !== null)
    ? `${ready} ready`
    : "readiness not reported";
  let verdict = `${plural(report.members.length, "member")}, ${reachable} reachable, ` +
    `${readiness}; `;
  if (!report.agreed) {
    const claims = report.members.filter((m) => m.reachable)
      .map((m) => `${m.name} says ${m.leader ?? "none"}`);
    verdict += `members disagree on the leader (${claims.join(", ")})`;
  } else if (report.leader === null) {
    verdict += "no leader";
  } else {
    verdict += `leader ${report.leader}` + (report.term === null ? "" : ` (term ${report.term})`);
  }
  return table(rows) + "\n" + verdict + "\n";
}

// "Cannot reach http://x: connection refused" -> "connection refused"
function shortError(error: string | null): string {
  if (error === null) return "?";
  const reason = error.replace(/^Cannot reach \S+: /, "");
  return reason.length > 60 ? reason.slice(0, 59) + "…" : reason;
}

/** membersCommand is `keel members`. Exit 1 only when no member could be reached. */
export async function membersCommand(args: string[], io: Io): Promise<number> {
  const flags = new Flags(args, connectionOptions);
  if (flags.positionals.length > 0) {
    throw new CliError(`keel members takes no arguments; got "${flags.positionals[0]}"`);
  }
  const target = resolveTarget(flags, io, memberTimeoutMsDefault);
  // Members found by gossip have no http address in the file: only the status tells it.
  const fallback = target.config?.members.filter((m) => m.http !== undefined)
    .map((m) => ({ name: m.name, url: memberHttpUrl(m) }));
  const report = await gatherMembers(target.url, fallback, target.timeoutMs);
  if (flags.boolean("json")) writeJson(io, report);
  else io.out(formatMembers(report));
  if (!report.members.some((m) => m.reachable)) {
    throw new CommandError("No member could be reached");
  }
  return 0;
}
