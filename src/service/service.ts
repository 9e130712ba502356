// The service interface: what a user writes to have keel replicate their state machine
// (DESIGN §7, after Aeron Cluster's ClusteredService). docs/services.md walks through one.
//
// Why a service must not read clocks or randomness: every member applies the same log and
// must reach the same state. A member applies an entry when it commits there, which is a
// different moment on each member, and a replacement or a restarted member applies it
// again minutes or months later. `Date.now()`, `performance.now()`, `Math.random()`,
// `crypto.getRandomValues()`, the environment, files or the network would give each of
// those applications a different answer, and the replicas would silently split: a
// follower promoted to leader would then serve a state no client ever wrote. So the
// context carries what a service needs instead, taken from the log itself:
// - `timeMs`, the log's time: stamped by the leader into each entry when it proposes it,
//   never read from the applying member's clock;
// - `random()`, a generator seeded from the entry's (index, term): every member draws the
//   same numbers for the same entry;
// - timers (`schedule`, `cancel`, `onTimer`) whose firing is itself a log entry, so every
//   member fires a timer at the same log position, once.

import type { Role } from "../consensus/types.ts";
import { Prng } from "../lib/prng.ts";

/** LogPosition names the log entry being applied. */
export interface LogPosition {
  /** Log index of the entry. */
  readonly index: number;
  /** Term of the leader that proposed it. */
  readonly term: number;
}

/**
 * ApplyContext is everything apply and onTimer may consult besides the command and the
 * service's own state. It is valid only during the call it is passed to.
 */
export interface ApplyContext extends LogPosition {
  /**
   * timeMs is the log's time in milliseconds since the epoch: stamped by the leader when it
   * proposed the entry, and never less than any earlier entry's. Use it for deadlines,
   * expiry and timestamps in results; never read a clock.
   */
  readonly timeMs: number;
  /** random returns a float in [0, 1), the same sequence on every member for this entry. */
  random(): number;
  /**
   * schedule sets cluster timer `id` to fire at log time `deadlineMs` (a timer already
   * named `id` is replaced). onTimer(id) runs on every member at the same log position,
   * once, at or after the deadline. Ids are 1 to 256 UTF-8 bytes.
   */
  schedule(id: string, deadlineMs: number): void;
  /** cancel removes timer `id`; it returns whether it was scheduled. */
  cancel(id: string): boolean;
  /** deadline is when timer `id` is due, or undefined when it is not scheduled. */
  deadline(id: string): number | undefined;
}

/** StartContext is given to Service.start, once, when the node starts. */
export interface StartContext {
  /** This member's name. */
  readonly name: string;
  /** The log index the service's state reflects (its snapshot's, 0 when empty). */
  readonly appliedIndex: number;
  /** Writes to the node's log (JSON lines on stderr by default). */
  readonly log: ServiceLogger;
}

/** ServiceLogger is the part of the node's logger a service may use. */
export interface ServiceLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** ServiceRole is this member's Raft role, as told to onRoleChange. */
export type ServiceRole = Role;

/**
 * Service is a deterministic state machine replicated by keel. Given the same commands in
 * the same order, every member must reach the same state and return the same results: no
 * clocks, no randomness, no I/O inside apply, onTimer, snapshot or restore (see the top of
 * this file for why, and the context for what to use instead).
 *
 * Errors: return an error result for a command you refuse (a bad request, insufficient
 * funds). A throw from apply or onTimer is treated as a bug in that command: keel rolls
 * the service back to its state before the entry (by restoring the latest snapshot and
 * re-applying the log since, which costs time), discards the timers it scheduled, and
 * answers the client with the error's message; every member does the same, so the
 * replicas stay equal. A restore that throws stops the node: it cannot serve the log's
 * state.
 */
export interface Service {
  /** apply runs one committed command and returns the result bytes for the client. */
  apply(command: Uint8Array, context: ApplyContext): Uint8Array;
  /** snapshot serializes the whole state, timers aside (keel keeps those). */
  snapshot(): Uint8Array;
  /** restore replaces the whole state with a snapshot's; it throws on bytes it cannot read. */
  restore(data: Uint8Array): void;
  /** onTimer runs when a timer scheduled through the context fires, as a log entry. */
  onTimer?(id: string, context: ApplyContext): void;
  /**
   * query answers a read from local state (POST /v1/query); it must not change state.
   * The caller chose the consistency: linearizable (after a ReadIndex barrier) or stale.
   */
  query?(request: Uint8Array): Uint8Array;
  /** start runs once, after the state was restored and before any entry is applied. */
  start?(context: StartContext): void;
  /**
   * onRoleChange tells the service that this member became leader, follower or candidate.
   * For side effects outside the replicated state only (metrics, a log line): it is not a
   * log entry, and members see it at different times.
   */
  onRoleChange?(role: ServiceRole): void;
  /** codec maps HTTP bodies of /v1/command and /v1/query to bytes and back; JSON by default. */
  readonly codec?: ServiceCodec;
}

/** ServiceFactory makes the service of one node; keel calls it once per process. */
export type ServiceFactory = () => Service;

/**
 * ServiceCodec is how the generic HTTP routes (POST /v1/command, POST /v1/query) turn a
 * request body into the bytes given to apply or query, and result bytes into the answer.
 */
export interface ServiceCodec {
  /** request reads a request body; throw an Error to answer 400 with its message. */
  request(body: Uint8Array, contentType: string | undefined): Uint8Array;
  /**
   * command reads the body of POST /v1/command, where it replaces request: decode and
   * validate the command here, and throw an Error to answer 400 with its message. A command
   * refused here never reaches the log; one that passes is proposed and every member
   * applies it, so a refusal in apply costs a log entry.
   */
  command?(body: Uint8Array, contentType: string | undefined): Uint8Array;
  /** response is the HTTP answer for result bytes of apply or query. */
  response(result: Uint8Array): { body: Uint8Array; contentType: string };
}

const textEncoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * jsonCodec is the default codec: a request body must be JSON, stored in the log as its
 * compact UTF-8 text; results are answered as they are, as application/json.
 */
export const jsonCodec: ServiceCodec = {
  request(body: Uint8Array): Uint8Array {
    let text: string;
    try {
      text = strictUtf8.decode(body);
    } catch {
      throw new Error("Request body is not valid UTF-8");
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error: unknown) {
      throw new Error(
        `Request body is not valid JSON: ${error instanceof Error ? error.message : error}`,
      );
    }
    return textEncoder.encode(JSON.stringify(value));
  },
  response(result: Uint8Array): { body: Uint8Array; contentType: string } {
    return { body: result, contentType: "application/json" };
  },
};

/** bytesCodec passes bodies and results through as they are (application/octet-stream). */
export const bytesCodec: ServiceCodec = {
  request: (body: Uint8Array): Uint8Array => body,
  response: (result: Uint8Array) => ({ body: result, contentType: "application/octet-stream" }),
};

/**
 * JsonServiceDefinition is a service written over JSON values: commands, results, query
 * requests and answers, and the snapshot are JSON. See jsonService.
 */
export interface JsonServiceDefinition<Command, Result, Query = never, Answer = never> {
  /**
   * validate says why a parsed command is malformed (undefined: it is fine). POST
   * /v1/command answers 400 with that message and proposes nothing. It sees only the
   * command, never state: whether a command is allowed now is apply's to say.
   */
  validate?(command: unknown): string | undefined;
  apply(command: Command, context: ApplyContext): Result;
  snapshot(): unknown;
  restore(state: unknown): void;
  onTimer?(id: string, context: ApplyContext): void;
  query?(request: Query): Answer;
  start?(context: StartContext): void;
  onRoleChange?(role: ServiceRole): void;
}

/**
 * jsonService adapts a definition over JSON values to Service, with the JSON codec.
 * Commands reach apply as parsed JSON: validate them before use, since any client can
 * send any JSON. Keep results and snapshots free of values JSON cannot carry (undefined,
 * NaN, Map); object keys keep their insertion order, which apply makes the same on every
 * member.
 */
export function jsonService<Command, Result, Query = never, Answer = never>(
  definition: JsonServiceDefinition<Command, Result, Query, Answer>,
): Service {
  const parse = (bytes: Uint8Array): unknown => JSON.parse(strictUtf8.decode(bytes));
  const encode = (value: unknown): Uint8Array =>
    textEncoder.encode(JSON.stringify(value) ?? "null");
  const validate = definition.validate?.bind(definition);
  const codec: ServiceCodec = validate === undefined ? jsonCodec : {
    ...jsonCodec,
    command(body: Uint8Array): Uint8Array {
      const command = jsonCodec.request(body, undefined);
      const problem = validate(parse(command));
      if (problem !== undefined) throw new Error(problem);
      return command;
    },
  };
  const service: Service = {
    codec,
    apply: (command, context) => encode(definition.apply(parse(command) as Command, context)),
    snapshot: () => encode(definition.snapshot()),
    restore: (data) => definition.restore(parse(data)),
  };
  if (definition.onTimer !== undefined) {
    const onTimer = definition.onTimer.bind(definition);
    service.onTimer = (id, context) => onTimer(id, context);
  }
  if (definition.query !== undefined) {
    const query = definition.query.bind(definition);
    service.query = (request) => encode(query(parse(request) as Query));
  }
  if (definition.start !== undefined) service.start = definition.start.bind(definition);
  if (definition.onRoleChange !== undefined) {
    service.onRoleChange = definition.onRoleChange.bind(definition);
  }
  return service;
}

/**
 * seededRandom is the generator of context.random() for the entry at (index, term): the
 * same numbers on every member, different ones for every entry.
 */
export function seededRandom(index: number, term: number): () => number {
  const high = Math.floor(index / 2 ** 32);
  const seed = mix32(mix32(index >>> 0) ^ mix32(high + 0x9e3779b9) ^ mix32(term + 0x7f4a7c15));
  const prng = new Prng(seed);
  return () => prng.next();
}

/** mix32 is the 32-bit finalizer of MurmurHash3: nearby inputs give unrelated outputs. */
function mix32(value: number): number {
  let h = value >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * standaloneContext is an ApplyContext outside a node, for unit tests of a service and
 * for callers that apply commands directly (given only a LogPosition, SessionService
 * uses one). Time is `timeMs` (0 by default); timers go to `timers`, which nothing fires.
 */
export function standaloneContext(
  position: LogPosition,
  options: { timeMs?: number; timers?: Map<string, number> } = {},
): ApplyContext {
  const timers = options.timers ?? new Map<string, number>();
  const random = seededRandom(position.index, position.term);
  return {
    index: position.index,
    term: position.term,
    timeMs: options.timeMs ?? 0,
    random,
    schedule(id: string, deadlineMs: number): void {
      timers.set(id, deadlineMs);
    },
    cancel(id: string): boolean {
      return timers.delete(id);
    },
    deadline(id: string): number | undefined {
      return timers.get(id);
    },
  };
}

/** toApplyContext completes a bare LogPosition into a standalone ApplyContext. */
export function toApplyContext(context: LogPosition | ApplyContext): ApplyContext {
  return "schedule" in context ? context : standaloneContext(context);
}
