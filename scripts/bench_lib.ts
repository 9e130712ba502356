// Pure helpers of scripts/bench.ts: the cluster file, latency summaries, the result table.
// Nothing here starts a process or touches the network.

/** BenchMember is one member of the benchmark cluster. */
export interface BenchMember {
  name: string;
  host: string;
  peerPort: number;
  httpPort: number;
}

/** benchMembers are three members on their own loopback addresses, 127.0.0.51-53. */
export const benchMembers: readonly BenchMember[] = [
  { name: "node-a", host: "127.0.0.51", peerPort: 7070, httpPort: 7080 },
  { name: "node-b", host: "127.0.0.52", peerPort: 7070, httpPort: 7080 },
  { name: "node-c", host: "127.0.0.53", peerPort: 7070, httpPort: 7080 },
];

/** httpUrl is the base URL of a member's client API. */
export function httpUrl(member: BenchMember): string {
  return `http://${member.host}:${member.httpPort}`;
}

/** ClusterYamlOptions are the extras of a cluster file beyond its members. */
export interface ClusterYamlOptions {
  /**
   * Name members by DNS (node-a.<domain>) instead of their IPs, resolved through `server`
   * ("host:port") every `refresh` (a duration such as "5s"; absent: keel's default). The
   * processes then need --peer-listen / --http-listen to know their own address.
   */
  dns?: { domain: string; server: string; refresh?: string };
  /** security.admin_token, so the bench can call POST /admin/*. */
  adminToken?: string;
}

/**
 * clusterYaml is the cluster file. It has no raft section on purpose, so the defaults
 * (tick 10ms, heartbeat 100ms, election 1s, snapshot every 10,000 entries) are what is
 * measured.
 */
export function clusterYaml(
  members: readonly BenchMember[],
  storageDir: string,
  options: ClusterYamlOptions = {},
): string {
  const lines = [
    "# Written by scripts/bench.ts; removed when the benchmark ends.",
    "cluster_name: bench",
    "members:",
  ];
  for (const member of members) {
    const host = options.dns === undefined ? member.host : dnsName(member, options.dns.domain);
    lines.push(`  - name: ${member.name}`);
    lines.push(`    peer: ${host}:${member.peerPort}`);
    lines.push(`    http: ${host}:${member.httpPort}`);
  }
  lines.push("storage:", `  dir: ${JSON.stringify(storageDir)}`);
  if (options.dns !== undefined) {
    lines.push("resolver:", `  servers: [${JSON.stringify(options.dns.server)}]`);
    if (options.dns.refresh !== undefined) lines.push(`  refresh: ${options.dns.refresh}`);
  }
  if (options.adminToken !== undefined) {
    lines.push("security:", `  admin_token: ${JSON.stringify(options.adminToken)}`);
  }
  lines.push("log:", "  level: info", "  format: text");
  return lines.join("\n") + "\n";
}

/** dnsName is a member's DNS name in a cluster file that names members by DNS. */
export function dnsName(member: BenchMember, domain: string): string {
  return `${member.name}.${domain}`;
}

/** LatencySummary describes a set of request latencies, in milliseconds. */
export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** percentile is the nearest-rank percentile of values sorted ascending (NaN if empty). */
export function percentile(sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(fraction * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

/** summarize sorts a copy of latencies and reports its percentiles. */
export function summarize(latenciesMs: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(latenciesMs).sort();
  const values = Array.from(sorted);
  let sum = 0;
  for (const value of values) sum += value;
  return {
    count: values.length,
    meanMs: values.length === 0 ? NaN : sum / values.length,
    p50Ms: percentile(values, 0.5),
    p90Ms: percentile(values, 0.9),
    p99Ms: percentile(values, 0.99),
    maxMs: values.length === 0 ? NaN : values[values.length - 1] as number,
  };
}

/** median of a list of numbers (NaN if empty). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle] as number
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** countInto adds one to counts[key]. */
export function countInto(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** sumCounts is the total of a count map. */
export function sumCounts(counts: Record<string, number>): number {
  let total = 0;
  for (const value of Object.values(counts)) total += value;
  return total;
}

/** rssKb reads VmRSS (kB) from the text of /proc/<pid>/status; undefined if absent. */
export function rssKb(procStatus: string): number | undefined {
  const match = /^VmRSS:\s+([0-9]+) kB$/m.exec(procStatus);
  return match === null ? undefined : Number(match[1]);
}

/** fixed formats a number for the table: "-" for NaN, else `digits` decimals. */
export function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

/** formatTable lays out rows under a header, right-aligning every column but the first. */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length))
  );
  const line = (cells: readonly string[]): string =>
    cells.map((cell, column) => {
      const width = widths[column] ?? 0;
      return column === 0 ? cell.padEnd(width) : cell.padStart(width);
    }).join("  ").trimEnd();
  const rule = widths.map((width) => "-".repeat(width)).join("  ");
  return [line(header), rule, ...rows.map(line)].join("\n");
}

/** filesystemName names common statfs types, so a tmpfs (no real fsync) is noticed. */
export function filesystemName(type: number): string {
  const names: Record<number, string> = {
    0xef53: "ext2/3/4",
    0x01021994: "tmpfs",
    0x58465342: "xfs",
    0x9123683e: "btrfs",
    0x794c7630: "overlayfs",
    0x2fc12fc1: "zfs",
  };
  return names[type] ?? `0x${type.toString(16)}`;
}

/** procCpuTicks is utime + stime (clock ticks) from the text of /proc/<pid>/stat. */
export function procCpuTicks(procStat: string): number | undefined {
  // The command name (field 2) is in parentheses and may hold spaces: split after it.
  const fields = procStat.slice(procStat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
}

/** MachineCpuTicks are the machine-wide counters of the first line of /proc/stat. */
export interface MachineCpuTicks {
  /** user, nice, system, irq and softirq. */
  busy: number;
  iowait: number;
  /** Time the hypervisor ran something else while this machine wanted the CPU. */
  steal: number;
}

/** machineCpuTicks reads the "cpu" line of /proc/stat; undefined if absent. */
export function machineCpuTicks(procStat: string): MachineCpuTicks | undefined {
  const line = procStat.split("\n").find((text) => text.startsWith("cpu "));
  if (line === undefined) return undefined;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is inside user already).
  const [user = 0, nice = 0, system = 0, _idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] =
    values;
  return { busy: user + nice + system + irq + softirq, iowait, steal };
}

/** maxGapMs is the longest time between consecutive instants (sorted ascending). */
export function maxGapMs(start: number, instants: readonly number[], end: number): number {
  let gap = 0;
  let previous = start;
  for (const instant of instants) {
    gap = Math.max(gap, instant - previous);
    previous = instant;
  }
  return Math.max(gap, end - previous);
}
