// The re-resolver of the DNS scheme (DESIGN.md §6): members' peer endpoints may be DNS
// names; every `resolver.refresh` each name is looked up again, and when its address
// changes the transport is told (it tears down the old connection and dials the new
// address). That is how a replacement host behind a repointed name is found.
//
// On failure the last good address stays in use: a DNS outage must not cut links that
// work. Failures are counted and shown on /status and /metrics.
//
// Bounds: one lookup in flight per member (a refresh finds it busy and skips it), and
// each lookup is abandoned after lookupTimeoutMs. Time and timers are injected, so the
// unit tests run on a fake clock.
//
// Address choice: a name with several addresses keeps its current address while that is
// still among them, else takes the first in sorted order. So a round-robin answer never
// makes the link flap, and every node picks the same address.

import { isIP } from "node:net";
import type { Config, ConfigProblem } from "../config/types.ts";
import { AssertionError } from "../lib/assert.ts";
import { formatDuration } from "../lib/duration.ts";
import type { Logger } from "../lib/log.ts";
import type { Registry } from "../lib/metrics.ts";
import { compareAddresses, createLookup, type Lookup, type LookupResult } from "./dns_client.ts";

/** lookupTimeoutMsDefault bounds one lookup of one member's name. */
export const lookupTimeoutMsDefault = 2000;
/** failureLogEvery: after the first failure in a row, only every Nth is logged as a warning. */
export const failureLogEvery = 10;
/** checkLookupTimeoutMs bounds each lookup `keel check-config` makes. */
export const checkLookupTimeoutMs = 3000;

/** ResolverMember is one peer endpoint: host is an IP (used as is) or a DNS name. */
export interface ResolverMember {
  name: string;
  host: string;
  port: number;
}

export interface Clock {
  /** now returns milliseconds since the epoch. */
  now(): number;
}

/** Scheduler is setTimeout and clearTimeout, injected so tests can run on a fake clock. */
export interface Scheduler {
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** realScheduler is the process's own timers. */
export const realScheduler: Scheduler = {
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface ReResolverOptions {
  members: readonly ResolverMember[];
  refreshMs: number;
  lookup: Lookup;
  clock: Clock;
  scheduler: Scheduler;
  /**
   * onChange is called with a member's address when it is first resolved and each time
   * it changes. The node points the transport there (setPeerAddress).
   */
  onChange: (name: string, host: string, port: number) => void;
  log: Logger;
  /** Default lookupTimeoutMsDefault. */
  lookupTimeoutMs?: number;
  /** The failure-detection timeout (raft.election_timeout): TTLs are checked against it. */
  detectionTimeoutMs?: number;
  /** resolver.replacement_delay_max: refresh plus TTL beyond it is warned of. */
  replacementDelayMaxMs?: number;
}

/** MemberResolution is what /status shows of one member's name resolution. */
export interface MemberResolution {
  name: string;
  /** The configured peer endpoint, "host:port". */
  endpoint: string;
  /** false when the configured host is an IP address: it is never looked up. */
  dns: boolean;
  /** The address in use; null until the name first resolves. */
  address: string | null;
  /** Every address of the last successful lookup, sorted. */
  addresses: string[];
  /** TTL of the last successful lookup; null through the system resolver. */
  ttlSeconds: number | null;
  lookups: number;
  /** Times in epoch milliseconds, null when it has not happened. */
  lastAttemptAt: number | null;
  lastSuccessAt: number | null;
  consecutiveFailures: number;
  totalFailures: number;
  lastError: string | null;
  lastErrorAt: number | null;
  /** When the address last moved from one IP to another (the first resolution is not a change). */
  lastChangeAt: number | null;
  changes: number;
  inFlight: boolean;
}

/** ResolverCounters are totals over every member, for /metrics. */
export interface ResolverCounters {
  lookups: number;
  failures: number;
  addressChanges: number;
}

interface MemberState {
  readonly member: ResolverMember;
  readonly view: MemberResolution;
  /** The recorded outcome of the current attempt; resolved once it is recorded. */
  pending: Promise<void> | undefined;
  ttlWarned: boolean;
}

/**
 * ReResolver keeps every member's DNS name resolved. start() resolves them all once and
 * then every refreshMs until stop().
 */
export class ReResolver {
  readonly #options: ReResolverOptions;
  readonly #lookupTimeoutMs: number;
  readonly #members: MemberState[];
  readonly #counters: ResolverCounters = { lookups: 0, failures: 0, addressChanges: 0 };
  #timer: unknown = undefined;
  #started = false;
  #stopped = false;

  constructor(options: ReResolverOptions) {
    if (!Number.isFinite(options.refreshMs) || options.refreshMs <= 0) {
      throw new RangeError(`Refresh interval must be positive, got ${options.refreshMs} ms`);
    }
    this.#options = options;
    this.#lookupTimeoutMs = options.lookupTimeoutMs ?? lookupTimeoutMsDefault;
    this.#members = options.members.map((member) => {
      const dns = isIP(member.host) === 0;
      return {
        member,
        pending: undefined,
        ttlWarned: false,
        view: {
          name: member.name,
          endpoint: formatEndpoint(member.host, member.port),
          dns,
          address: dns ? null : member.host,
          addresses: dns ? [] : [member.host],
          ttlSeconds: null,
          lookups: 0,
          lastAttemptAt: null,
          lastSuccessAt: null,
          consecutiveFailures: 0,
          totalFailures: 0,
          lastError: null,
          lastErrorAt: null,
          lastChangeAt: null,
          changes: 0,
          inFlight: false,
        },
      };
    });
  }

  /**
   * start resolves every DNS name once and schedules the refreshes. The promise resolves
   * when that first round has an outcome for every member (success, failure or timeout),
   * so it waits at most about lookupTimeoutMs.
   */
  start(): Promise<void> {
    if (this.#started) throw new Error("ReResolver already started");
    this.#started = true;
    if (!this.#members.some((state) => state.view.dns)) return Promise.resolve();
    const first = this.#round();
    this.#arm();
    return first;
  }

  /** refreshNow starts a round at once (members with a lookup in flight are left to it). */
  refreshNow(): Promise<void> {
    return this.#round();
  }

  /** stop cancels the refreshes and abandons lookups in flight; their results are dropped. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#options.scheduler.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** state is a copy of every member's resolution, in configured order. */
  state(): MemberResolution[] {
    return this.#members.map((state) => ({ ...state.view, addresses: [...state.view.addresses] }));
  }

  counters(): ResolverCounters {
    return { ...this.#counters };
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = this.#options.scheduler.setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped) return;
      void this.#round();
      this.#arm();
    }, this.#options.refreshMs);
  }

  #round(): Promise<void> {
    const attempts = this.#members.filter((state) => state.view.dns).map((state) =>
      this.#resolve(state)
    );
    return Promise.all(attempts).then(() => {});
  }

  #resolve(state: MemberState): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (state.view.inFlight) return state.pending ?? Promise.resolve();
    const { clock, scheduler } = this.#options;
    const view = state.view;
    view.inFlight = true;
    view.lookups++;
    view.lastAttemptAt = clock.now();
    this.#counters.lookups++;
    const controller = new AbortController();
    const host = state.member.host;
    state.pending = new Promise<void>((done) => {
      let recorded = false;
      const timer = scheduler.setTimeout(() => {
        if (recorded) return;
        recorded = true;
        controller.abort();
        this.#recordFailure(
          state,
          `Lookup of "${host}" timed out after ${this.#lookupTimeoutMs} ms`,
        );
        done();
      }, this.#lookupTimeoutMs);
      let lookup: Promise<LookupResult>;
      try {
        lookup = this.#options.lookup(host, controller.signal);
      } catch (error: unknown) {
        lookup = Promise.reject(error);
      }
      lookup.then(
        (result) => {
          // The member stays busy until the lookup itself ends, even after a timeout.
          view.inFlight = false;
          if (recorded) {
            this.#options.log.debug("late DNS answer ignored", { member: view.name, host });
            return;
          }
          recorded = true;
          scheduler.clearTimeout(timer);
          this.#recordSuccess(state, result);
          done();
        },
        (error: unknown) => {
          view.inFlight = false;
          if (error instanceof AssertionError) throw error;
          if (recorded) return;
          recorded = true;
          scheduler.clearTimeout(timer);
          this.#recordFailure(state, error instanceof Error ? error.message : String(error));
          done();
        },
      );
    });
    return state.pending;
  }

  #recordSuccess(state: MemberState, result: LookupResult): void {
    if (this.#stopped) return;
    const view = state.view;
    const addresses = [...new Set(result.addresses.filter((address) => isIP(address) !== 0))]
      .sort(compareAddresses);
    const first = addresses[0];
    if (first === undefined) {
      this.#recordFailure(
        state,
        `Lookup of "${state.member.host}" returned no IP address (${
          JSON.stringify(result.addresses)
        })`,
      );
      return;
    }
    const now = this.#options.clock.now();
    const log = this.#options.log;
    if (view.consecutiveFailures > 0) {
      log.info("member name resolves again", {
        member: view.name,
        host: state.member.host,
        failures: view.consecutiveFailures,
      });
    }
    view.addresses = addresses;
    view.ttlSeconds = result.ttlSeconds;
    view.lastSuccessAt = now;
    view.consecutiveFailures = 0;
    const detectionTimeoutMs = this.#options.detectionTimeoutMs;
    if (!state.ttlWarned && detectionTimeoutMs !== undefined) {
      state.ttlWarned = true;
      const warnings = ttlWarnings(
        result.ttlSeconds,
        this.#options.refreshMs,
        detectionTimeoutMs,
        this.#options.replacementDelayMaxMs,
      );
      for (const warning of warnings) {
        log.warn(`DNS record of member "${view.name}": ${warning.message}`, {
          member: view.name,
          host: state.member.host,
          ttlSeconds: result.ttlSeconds,
        });
      }
      const note = replacementDelayNote(result.ttlSeconds, this.#options.refreshMs);
      log.info(`DNS record of member "${view.name}": ${note}`, {
        member: view.name,
        host: state.member.host,
        ttlSeconds: result.ttlSeconds,
      });
    }
    const current = view.address;
    const chosen = current !== null && addresses.includes(current) ? current : first;
    if (chosen === current) return;
    view.address = chosen;
    if (current === null) {
      log.info("resolved member address", {
        member: view.name,
        host: state.member.host,
        address: chosen,
        addresses,
        ttlSeconds: result.ttlSeconds,
      });
    } else {
      view.changes++;
      view.lastChangeAt = now;
      this.#counters.addressChanges++;
      log.warn("member address changed; reconnecting", {
        member: view.name,
        host: state.member.host,
        from: current,
        to: chosen,
        addresses,
      });
    }
    try {
      this.#options.onChange(view.name, chosen, state.member.port);
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      log.error("cannot apply a member's new address", {
        member: view.name,
        address: chosen,
        error,
      });
    }
  }

  #recordFailure(state: MemberState, message: string): void {
    if (this.#stopped) return;
    const view = state.view;
    view.consecutiveFailures++;
    view.totalFailures++;
    view.lastError = message;
    view.lastErrorAt = this.#options.clock.now();
    this.#counters.failures++;
    const fields = {
      member: view.name,
      host: state.member.host,
      address: view.address,
      consecutiveFailures: view.consecutiveFailures,
      error: message,
    };
    if (view.consecutiveFailures === 1 || view.consecutiveFailures % failureLogEvery === 0) {
      this.#options.log.warn(
        view.address === null
          ? "cannot resolve member name; no address known yet"
          : "cannot resolve member name; keeping the last good address",
        fields,
      );
    } else {
      this.#options.log.debug("cannot resolve member name", fields);
    }
  }
}

function formatEndpoint(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface TtlWarning {
  kind: "ttl" | "replacement-delay";
  message: string;
}

/**
 * ttlWarnings says when a record's caching makes finding a replaced host riskier than the
 * operator chose: a TTL above the failure-detection timeout (raft.election_timeout), or
 * else, when resolver.replacement_delay_max is set, the refresh interval plus the TTL
 * above it. The refresh interval alone is the operator's choice and is not warned of: the
 * defaults (refresh 5s, election timeout 1s) warn of nothing. A null TTL (system
 * resolver) is unknown and counts as 0. Pure.
 */
export function ttlWarnings(
  ttlSeconds: number | null,
  refreshMs: number,
  detectionTimeoutMs: number,
  replacementDelayMaxMs?: number,
): TtlWarning[] {
  const detection = `the failure-detection timeout (raft.election_timeout) of ${
    formatDuration(detectionTimeoutMs)
  }`;
  const ttlMs = (ttlSeconds ?? 0) * 1000;
  if (ttlSeconds !== null && ttlMs > detectionTimeoutMs) {
    return [{
      kind: "ttl",
      message: `TTL of ${ttlSeconds}s exceeds ${detection}; resolvers may hand out the old ` +
        `address that long after the name is repointed`,
    }];
  }
  if (replacementDelayMaxMs !== undefined && refreshMs + ttlMs > replacementDelayMaxMs) {
    return [{
      kind: "replacement-delay",
      message: `resolver.refresh of ${formatDuration(refreshMs)} plus TTL of ${ttlSeconds}s ` +
        `makes up to ${formatDuration(refreshMs + ttlMs)} before peers reach a replaced ` +
        `host, more than resolver.replacement_delay_max of ${
          formatDuration(replacementDelayMaxMs)
        }`,
    }];
  }
  return [];
}

/**
 * replacementDelayNote says how long peers may take to reach a replaced host after its
 * record is repointed: one refresh plus the record's TTL (unknown through the system
 * resolver). Pure.
 */
export function replacementDelayNote(ttlSeconds: number | null, refreshMs: number): string {
  const refresh = `resolver.refresh ${formatDuration(refreshMs)}`;
  if (ttlSeconds === null) {
    return `peers reach a replaced host within ${refresh} plus the record's TTL (unknown ` +
      "through the system resolver) of its record being repointed";
  }
  return `peers reach a replaced host within ${
    formatDuration(refreshMs + ttlSeconds * 1000)
  } of its record being repointed (${refresh} + TTL ${ttlSeconds}s)`;
}

/** registerResolverMetrics adds the keel_dns_* series, read from the resolver on scrape. */
export function registerResolverMetrics(
  registry: Registry,
  resolver: ReResolver,
  clock: Clock = Date,
): void {
  const perMember = (pick: (view: MemberResolution) => number | null) => () =>
    resolver.state().filter((view) => view.dns).flatMap(
      (view): Array<[{ member: string }, number]> => {
        const value = pick(view);
        return value === null ? [] : [[{ member: view.name }, value]];
      },
    );
  registry.counter(
    "keel_dns_lookups_total",
    "DNS lookups of member names",
    perMember((v) => v.lookups),
  );
  registry.counter(
    "keel_dns_lookup_failures_total",
    "DNS lookups of member names that failed or timed out (the last good address stays in use)",
    perMember((v) => v.totalFailures),
  );
  registry.gauge(
    "keel_dns_consecutive_failures",
    "DNS lookups of a member name that failed in a row, 0 after a success",
    perMember((v) => v.consecutiveFailures),
  );
  registry.counter(
    "keel_dns_address_changes_total",
    "Times a member name resolved to a new address and the peer link was redialled",
    perMember((v) => v.changes),
  );
  registry.gauge(
    "keel_dns_record_ttl_seconds",
    "TTL of a member's DNS record at the last lookup",
    perMember((v) => v.ttlSeconds),
  );
  registry.gauge(
    "keel_dns_last_success_age_seconds",
    "Seconds since a member name last resolved",
    () =>
      resolver.state().filter((view) => view.dns && view.lastSuccessAt !== null).map((view) => [
        { member: view.name },
        (clock.now() - view.lastSuccessAt!) / 1000,
      ]),
  );
}

export interface StartResolverOptions {
  config: Config;
  /** This node's member name: its own endpoint is not resolved. */
  self: string;
  transport: { setPeerAddress(name: string, host: string, port: number): void };
  log: Logger;
  /** When given, the keel_dns_* metrics are registered here. */
  registry?: Registry;
  /** Default: resolver.servers directly when set, else the system resolver. */
  lookup?: Lookup;
}

/**
 * startResolver re-resolves the peer endpoints of every other member and points the
 * transport at their addresses. Call it after the transport is built and before it
 * dials (node.start()): it waits for the first round (at most about 2 s), so the first
 * dials already go to resolved addresses.
 */
export async function startResolver(options: StartResolverOptions): Promise<ReResolver> {
  const { config } = options;
  const resolver = new ReResolver({
    // Members listed by name alone have no endpoint to resolve: gossip finds them.
    members: config.members.flatMap((member) =>
      member.name === options.self || member.peer === undefined
        ? []
        : [{ name: member.name, host: member.peer.host, port: member.peer.port }]
    ),
    refreshMs: config.resolver.refreshMs,
    lookup: options.lookup ?? createLookup(config.resolver.servers),
    clock: Date,
    scheduler: realScheduler,
    onChange: (name, host, port) => options.transport.setPeerAddress(name, host, port),
    log: options.log,
    detectionTimeoutMs: config.raft.electionTimeoutMs,
    ...(config.resolver.replacementDelayMaxMs === undefined
      ? {}
      : { replacementDelayMaxMs: config.resolver.replacementDelayMaxMs }),
  });
  if (options.registry !== undefined) registerResolverMetrics(options.registry, resolver);
  await resolver.start();
  return resolver;
}

export interface CheckDnsOptions {
  /** Default: resolver.servers directly when set, else the system resolver. */
  lookup?: Lookup;
  timeoutMs?: number;
}

/**
 * checkDnsTtls resolves every member's peer host that is a DNS name and returns warnings
 * for `keel check-config`: names that do not resolve, and TTLs that delay finding a
 * replaced host (ttlWarnings). Each name is looked up once, all at once, each bounded by
 * timeoutMs.
 */
export async function checkDnsTtls(
  config: Config,
  options: CheckDnsOptions = {},
): Promise<ConfigProblem[]> {
  return (await checkDns(config, options)).warnings;
}

/** DnsCheck is what `keel check-config` says of members' DNS names. */
export interface DnsCheck {
  warnings: ConfigProblem[];
  /** Per name that resolves: how long peers take to reach a replaced host (information). */
  notes: ConfigProblem[];
}

/** checkDns is checkDnsTtls with, beside the warnings, the replacement delay of each name. */
export async function checkDns(config: Config, options: CheckDnsOptions = {}): Promise<DnsCheck> {
  const lookup = options.lookup ?? createLookup(config.resolver.servers);
  const timeoutMs = options.timeoutMs ?? checkLookupTimeoutMs;
  const via = config.resolver.servers.length > 0
    ? `through ${config.resolver.servers.join(", ")}`
    : "through the system resolver";
  const hosts = new Map<string, string>(); // lower-case host -> path of its first member
  for (const [index, member] of config.members.entries()) {
    const host = member.peer?.host;
    if (host === undefined || isIP(host) !== 0 || hosts.has(host.toLowerCase())) continue;
    hosts.set(host.toLowerCase(), `members[${index}].peer`);
  }
  const found = await Promise.all([...hosts].map(async ([host, path]): Promise<DnsCheck> => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const result = await Promise.race([
        lookup(host, controller.signal),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            controller.abort();
            reject(new Error(`no answer within ${formatDuration(timeoutMs)}`));
          }, timeoutMs);
        }),
      ]);
      const warnings = ttlWarnings(
        result.ttlSeconds,
        config.resolver.refreshMs,
        config.raft.electionTimeoutMs,
        config.resolver.replacementDelayMaxMs,
      );
      return {
        warnings: warnings.map((warning) => ({ path, message: `"${host}": ${warning.message}` })),
        notes: [{
          path,
          message: `"${host}": ${
            replacementDelayNote(result.ttlSeconds, config.resolver.refreshMs)
          }`,
        }],
      };
    } catch (error: unknown) {
      if (error instanceof AssertionError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      return {
        warnings: [{ path, message: `"${host}" does not resolve ${via}: ${reason}` }],
        notes: [],
      };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }));
  return {
    warnings: found.flatMap((check) => check.warnings),
    notes: found.flatMap((check) => check.notes),
  };
}
