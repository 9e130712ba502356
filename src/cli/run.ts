// `keel run`: start one member. Wiring only: config -> storage -> service -> transport ->
// node -> HTTP. Exits 2 on a bad config or bad arguments, 1 on a failure to start.

import { existsSync, readdirSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { formatProblems, gossipAddressed, loadConfig, memberByName } from "../config/parse.ts";
import { fingerprint, fingerprintFields } from "../config/fingerprint.ts";
import { quorumSize } from "../consensus/quorum.ts";
import { loadSecret, loadTls } from "../config/secret.ts";
import { createApp } from "../http/app.ts";
import { type HttpServer, serveHttp } from "../http/server.ts";
import { AssertionError } from "../lib/assert.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { KeelNode, type NodeDeps } from "../node/node.ts";
import { KvService } from "../service/kv.ts";
import type { ServiceFactory } from "../service/service.ts";
import { SessionService } from "../service/sessions.ts";
import { quarantineDataDir, quarantinePrefix, SqliteStorage } from "../storage/sqlite_storage.ts";
import { StorageCorruptionError } from "../storage/storage.ts";
import { TcpTransport } from "../transport/tcp.ts";
import { registerResolverMetrics, startResolver } from "../resolver/dns.ts";
import {
  type GossipAgent,
  pendingPeerAddress,
  registerGossipMetrics,
  startGossip,
} from "../resolver/gossip.ts";
import { isWildcard } from "../resolver/gossip_wire.ts";
import { version } from "../version.ts";
import { CliError, type Flags } from "./flags.ts";
import { describeCrash, exitCodeInternal, exitOnUncaught } from "./crash.ts";

/** Exit code after a write to storage failed while running (EX_IOERR): restart to reload. */
export const exitCodeStorageFailed = 74;

export interface RunOptions {
  config: string;
  name: string | undefined;
  dataDir: string | undefined;
  logFormat: "json" | "text" | undefined;
  logLevel: "debug" | "info" | "warn" | "error" | undefined;
  /** Listen for peers here instead of on the member's configured peer endpoint. */
  peerListen: { host: string; port: number } | undefined;
  /** Serve HTTP here instead of on the member's configured http endpoint. */
  httpListen: { host: string; port: number } | undefined;
  /** Gossip (UDP) here; default: the peer-listen host at gossip.port. */
  gossipListen?: { host: string; port: number } | undefined;
  /**
   * Founding members to form a new cluster without (--form-without NAME[,NAME]): when a
   * founding host never comes up. An empty data dir only; the rest must be a majority.
   */
  formWithout?: string[] | undefined;
  /** Makes the replicated service (keel as a library, src/index.ts); kv by default. */
  service?: ServiceFactory | undefined;
}

export function runOptions(flags: Flags): RunOptions {
  const config = flags.string("config");
  if (config === undefined) throw new CliError("keel run needs --config FILE");
  const logFormat = flags.choice("log-format", ["json", "text"] as const);
  const logLevel = flags.choice("log-level", ["debug", "info", "warn", "error"] as const);
  const peerListen = listenFlag(flags, "peer-listen");
  const httpListen = listenFlag(flags, "http-listen");
  const gossipListen = listenFlag(flags, "gossip-listen");
  const formWithout = flags.string("form-without")?.split(",").map((name) => name.trim())
    .filter((name) => name !== "");
  return {
    formWithout,
    config,
    name: flags.string("name"),
    dataDir: flags.string("data-dir"),
    logFormat,
    logLevel,
    peerListen,
    httpListen,
    gossipListen,
  };
}

/**
 * openVerified opens the data dir and reads back everything it holds, checking every
 * checksum (the log, hard state, meta, the snapshot). A data dir that fails them cannot
 * be trusted: it is a partly wiped host. It is moved aside (kept for forensics, never
 * deleted: storage quarantineDataDir), and this member starts empty, to rejoin its cluster
 * as a replacement under a new incarnation (R0-R8). Returns an exit code when it cannot
 * open at all.
 */
function openVerified(
  dataDir: string,
  name: string,
  log: Logger,
):
  | { storage: SqliteStorage; quarantined: boolean; loaded: NonNullable<NodeDeps["loaded"]> }
  | number {
  let quarantined = false;
  for (let attempt = 0; attempt < 2; attempt++) {
    let storage: SqliteStorage | undefined;
    try {
      storage = SqliteStorage.open(dataDir);
      const migration = storage.migration;
      if (migration !== undefined) {
        log.warn(
          `data dir migrated to schema ${migration.toVersion} (one way: an older keel cannot open it)`,
          { dataDir, fromVersion: migration.fromVersion, notes: migration.notes },
        );
      }
      storage.identity(name);
      // Read (and so verify) once; the node restores from these instead of reading again.
      const loaded = { restored: storage.load(), snapshot: storage.readSnapshot() };
      return { storage, quarantined, loaded };
    } catch (error: unknown) {
      try {
        storage?.close();
      } catch {
        // Closing a damaged database may fail too; the files are moved aside next.
      }
      if (!(error instanceof StorageCorruptionError) || attempt > 0) {
        log.error("cannot open storage", { dataDir, error });
        return 1;
      }
      log.error(
        "the data dir fails its checksums and cannot be trusted: moving it aside; this member rejoins as a replacement",
        {
          dataDir,
          kind: error.kind,
          index: error.index,
          offset: error.offset,
          path: error.path,
          error: error.message,
        },
      );
      const report = quarantineDataDir(dataDir, error.message);
      log.warn("damaged data kept for forensics (keel never deletes it)", {
        quarantine: report.path,
      });
      quarantined = true;
    }
  }
  return 1;
}

/**
 * formWithoutProblem checks --form-without: other members of the config, leaving a
 * majority of the members (this one included) to form the cluster. Undefined when fine.
 */
export function formWithoutProblem(
  without: readonly string[],
  members: readonly string[],
  self: string,
): string | undefined {
  for (const name of without) {
    if (name === self) return `"${name}" is this member; name the members that are missing`;
    if (!members.includes(name)) {
      return `"${name}" is not a member; members are ${members.map((m) => `"${m}"`).join(", ")}`;
    }
  }
  const founders = members.length - new Set(without).size;
  const majority = quorumSize(members.length);
  if (without.length > 0 && founders < majority) {
    return `forming without ${without.join(", ")} leaves ${founders} of ${members.length} ` +
      `members: a new cluster needs a majority (${majority}) of empty members up together`;
  }
  return undefined;
}

function listenFlag(flags: Flags, name: string): { host: string; port: number } | undefined {
  const text = flags.string(name);
  if (text === undefined) return undefined;
  const match = /^(.+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (match === null || port < 1 || port > 65535) {
    throw new CliError(`--${name} must be HOST:PORT; got "${text}"`);
  }
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
}

/** run starts a node and resolves when it has stopped (signal or fatal error). */
export async function run(options: RunOptions): Promise<number> {
  const loaded = loadConfig(options.config);
  if (loaded.config === undefined) {
    process.stderr.write(formatProblems(loaded.problems, options.config) + "\n");
    return 2;
  }
  const config = loaded.config;
  const name = options.name ?? hostname();
  const member = memberByName(config, name);
  if (member === undefined) {
    process.stderr.write(
      `${options.config}: no member named "${name}"; members are ${
        config.members.map((m) => `"${m.name}"`).join(", ")
      }` +
        (options.name === undefined ? " (pass --name; the default is the host name)" : "") + "\n",
    );
    return 2;
  }
  // Where this node listens. A member listed by name alone (found by gossip) has no
  // configured endpoint: --peer-listen and --http-listen are also what it advertises.
  const peerAt = options.peerListen ?? member.peer;
  const httpAt = options.httpListen ?? member.http;
  const gossipOn = config.gossip !== undefined && config.members.some(gossipAddressed);
  const gossipAt = options.gossipListen ??
    (peerAt === undefined ? undefined : { host: peerAt.host, port: config.gossip?.port ?? 0 });
  if (peerAt === undefined || httpAt === undefined || gossipAt === undefined) {
    process.stderr.write(
      `${options.config}: member "${name}" is found by gossip (no peer and http in the file): ` +
        "pass --peer-listen HOST:PORT and --http-listen HOST:PORT, the addresses it advertises\n",
    );
    return 2;
  }
  const advertised = gossipAddressed(member) ? [peerAt, httpAt, gossipAt] : [gossipAt];
  if (gossipOn && advertised.some((endpoint) => isWildcard(endpoint.host))) {
    process.stderr.write(
      `member "${name}" advertises its listen addresses by gossip: --peer-listen, ` +
        "--http-listen and --gossip-listen must be addresses peers can reach, not 0.0.0.0 or ::\n",
    );
    return 2;
  }
  const log: Logger = createLogger({
    level: options.logLevel ?? config.log.level,
    format: options.logFormat ?? config.log.format,
  }, { node: name });
  // A broken invariant anywhere (a timer, an immediate, a promise callback) ends the process.
  exitOnUncaught((error) => {
    log.error(`internal error (a bug): exiting with ${exitCodeInternal}`, {
      error: error instanceof Error ? error.message : String(error),
      stack: describeCrash(error),
    });
  });
  for (const warning of loaded.warnings) {
    log.warn("config warning", { path: warning.path, warning: warning.message });
  }

  const formWithout = options.formWithout ?? [];
  const formProblem = formWithoutProblem(formWithout, config.members.map((m) => m.name), name);
  if (formProblem !== undefined) {
    process.stderr.write(`--form-without: ${formProblem}\n`);
    return 2;
  }
  const dataDir = options.dataDir ?? join(config.storage.dir, name);
  const opened = openVerified(dataDir, name, log);
  if (typeof opened === "number") return opened;
  const storage = opened.storage;
  // A member whose data dir was moved aside never founds a cluster: it rejoins its own.
  const joinOnly = opened.quarantined ||
    (storage.isEmpty() && existsSync(dataDir) &&
      readdirSync(dataDir).some((file) => file.startsWith(quarantinePrefix)));
  let identity;
  try {
    identity = storage.identity(name);
    if (formWithout.length > 0 && !storage.isEmpty()) {
      process.stderr.write(
        `--form-without: the data dir ${dataDir} has state: it forms no new cluster ` +
          "(start it without the flag; a member with state rejoins its cluster)\n",
      );
      storage.close();
      return 2;
    }
    if (storage.isEmpty() && identity.status !== "recovering") {
      // R2: an empty node is recovering, durably, before any network I/O. It turns normal
      // only by forming a brand-new cluster with every other member (all empty), or by
      // being fenced in as the replacement of this member.
      storage.setStatus("recovering");
      identity = storage.identity(name);
    }
  } catch (error: unknown) {
    log.error("cannot use this data dir", { dataDir, error });
    storage.close();
    return 1;
  }
  log.info("starting keel", {
    version,
    cluster: config.clusterName,
    incarnation: identity.incarnation,
    dataDir,
    fingerprint: fingerprint(config),
    peer: `${(member.peer ?? peerAt).host}:${(member.peer ?? peerAt).port}`,
    http: `${(member.http ?? httpAt).host}:${(member.http ?? httpAt).port}`,
  });
  let secret: Uint8Array | undefined;
  let tls: ReturnType<typeof loadTls>;
  try {
    secret = loadSecret(config, { warn: (message) => log.warn(message) });
    tls = loadTls(config, { warn: (message) => log.warn(message) });
  } catch (error: unknown) {
    log.error("cannot load security settings", {
      error: error instanceof Error ? error.message : String(error),
    });
    storage.close();
    return 2;
  }
  if (secret === undefined) {
    log.warn("dev mode: no security.secret_file or secret_env, peer links are not authenticated");
  }

  const userService = (options.service ?? (() => new KvService()))();
  const kv = userService instanceof KvService ? userService : undefined;
  const service = new SessionService(userService);
  const transportLog = log.child({ component: "transport" });
  const transport = new TcpTransport({
    self: { name, incarnation: identity.incarnation },
    listen: peerAt,
    // A member found by gossip is dialled at a placeholder that fails until gossip finds it.
    peers: config.members.filter((m) => m.name !== name).map((m) => ({
      name: m.name,
      ...(m.peer ?? pendingPeerAddress(m.name)),
    })),
    clusterName: config.clusterName,
    fingerprint: fingerprint(config),
    fingerprintFields: fingerprintFields(config),
    log: (level, message, fields) => transportLog[level](message, fields),
    random: Math.random,
    localState: () => ({
      hasState: node !== undefined && (node.raft.term > 0 || node.raft.lastIndex > 0),
      recovering: node === undefined ? identity.status === "recovering" : node.raft.recovering,
      term: node?.raft.term ?? 0,
      lastIndex: node?.raft.lastIndex ?? 0,
    }),
    checkPeer: (hello) => node?.checkPeer(hello) ?? null,
    secret,
    tls,
  });
  // Declared before the node exists: the transport's callbacks above read it late.
  let node: KeelNode | undefined;
  // Resolve the members' DNS names before the transport first dials (waits at most ~2 s),
  // then every resolver.refresh; a changed address redials that peer.
  const resolver = await startResolver({
    config,
    self: name,
    transport,
    log: log.child({ component: "resolver" }),
  });
  // The name scheme: advertise this node and learn the members listed by name alone.
  let gossip: GossipAgent | undefined;
  if (gossipOn) {
    try {
      gossip = await startGossip({
        config,
        self: {
          name,
          incarnation: identity.incarnation,
          peer: peerAt,
          http: httpAt,
          gossip: gossipAt,
        },
        transport,
        selfState: () => ({
          recovering: node === undefined ? identity.status === "recovering" : node.raft.recovering,
          fenced: node?.raft.fenced !== null && node?.raft.fenced !== undefined,
        }),
        checkClaim: (peer, incarnation, recovering) =>
          node?.raft.fencedOut(peer, { incarnation, recovering }) ?? null,
        log: log.child({ component: "gossip" }),
      });
    } catch (error: unknown) {
      log.error("cannot start gossip", { error });
      resolver.stop();
      storage.close();
      return 1;
    }
  }
  let requestShutdown = (): void => {};
  let requestRestart = (): void => {};
  let requestFatal = (): void => {};
  let requestStorageFailed = (): void => {};
  try {
    node = new KeelNode({
      config,
      name,
      identity,
      storage,
      transport,
      service,
      log,
      version,
      adminToken: config.security.adminToken,
      onShutdown: () => requestShutdown(),
      onRestartRequired: () => requestRestart(),
      onFatal: () => requestFatal(),
      onStorageFailed: () => requestStorageFailed(),
      formWithout,
      joinOnly,
      loaded: opened.loaded,
      resolution: () => resolver.state(),
      ...(gossip === undefined ? {} : { gossip }),
    });
  } catch (error: unknown) {
    // The stored snapshot cannot be restored (a service bug, or a snapshot of another
    // service): serving anything else than the log's state would split the replicas.
    log.error("cannot restore this node's state; stopping", {
      error: error instanceof Error ? error.message : String(error),
    });
    resolver.stop();
    gossip?.stop();
    storage.close();
    return 1;
  }
  registerResolverMetrics(node.registry, resolver);
  if (gossip !== undefined) registerGossipMetrics(node.registry, gossip);
  try {
    await node.start();
  } catch (error: unknown) {
    log.error("cannot start peer transport", {
      error,
      peer: `${peerAt.host}:${peerAt.port}`,
    });
    resolver.stop();
    gossip?.stop();
    storage.close();
    return 1;
  }
  const app = createApp({
    node,
    ops: node,
    kv,
    service: userService,
    bodyBytesMax: config.http.bodyBytesMax,
    forwardTimeoutMs: config.http.requestTimeoutMs,
    clientToken: config.security.clientToken,
    // Writes forwarded to an https leader trust security.tls.ca_file.
    ...(tls?.ca === undefined
      ? {}
      : { fetchLeader: (input, init) => fetch(input, { ...init, tls: { ca: tls.ca } }) }),
    logError: (message, error) => log.error(message, { error }),
    logInfo: (message, fields) => log.info(message, fields),
  });
  let server: HttpServer;
  try {
    // node:http under Bun, not Bun.serve: Bun.serve drops pipelined requests (http/server.ts).
    server = await serveHttp({
      hostname: httpAt.host,
      port: httpAt.port,
      ...(tls === undefined ? {} : { tls: { cert: tls.cert, key: tls.key } }),
      fetch: app.fetch,
      // Answered 413 in the app's words before the body is read; the app checks it again.
      maxRequestBodyBytes: config.http.bodyBytesMax,
      idleTimeoutSeconds: 60,
      onServerError: (error) => log.error("HTTP listener error", { error }),
      error(error) {
        // A broken invariant is a bug: crash so the supervisor restarts a clean process.
        if (error instanceof AssertionError) {
          log.error("assertion failed; exiting", { error, stack: error.stack });
          process.exit(exitCodeInternal);
        }
        log.error("unhandled HTTP error", { error });
        return new Response(
          JSON.stringify({ error: { code: "internal", message: "Internal server error" } }),
          {
            status: 500,
            headers: { "content-type": "application/json" },
          },
        );
      },
    });
  } catch (error: unknown) {
    log.error("cannot listen for HTTP", { error, http: `${httpAt.host}:${httpAt.port}` });
    resolver.stop();
    gossip?.stop();
    await node.stop();
    storage.close();
    return 1;
  }
  log.info("serving", {
    http: `${tls === undefined ? "http" : "https"}://${httpAt.host}:${httpAt.port}`,
  });

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string, code = 0): Promise<void> => {
      if (stopping) return;
      stopping = true;
      log.info("stopping", { signal });
      await server.stop();
      resolver.stop();
      gossip?.stop();
      await node.stop();
      try {
        storage.close();
      } catch (error: unknown) {
        // After a storage failure closing may fail too; what is durable is on disk.
        log.warn("closing storage failed", { error });
      }
      resolve(code);
    };
    requestShutdown = () => void stop("graceful shutdown (SIGTERM or keel shutdown)");
    // 75 (EX_TEMPFAIL): start again; the data dir has a new incarnation (see --help).
    requestRestart = () => void stop("restart required", 75);
    // The node stopped itself: it cannot serve the log's state (logged with the reason).
    requestFatal = () => void stop("fatal service error", 1);
    // A write to storage failed: stop at once, so this process acknowledges nothing more;
    // started again (Restart=), it reloads what is durable and the peers catch it up.
    requestStorageFailed = () => void stop("storage failed", exitCodeStorageFailed);
    process.on("SIGINT", () => void stop("SIGINT"));
    // SIGTERM (systemd stop, kill) is a graceful shutdown: a leader hands over first.
    process.on("SIGTERM", () => {
      log.info("SIGTERM received");
      void node.shutdown();
    });
  });
}
