// `keel run`: start one member. Wiring only: config -> storage -> service -> transport ->
// node -> HTTP. Exits 2 on a bad config or bad arguments, 1 on a failure to start.

import { hostname } from "node:os";
import { join } from "node:path";
import { formatProblems, loadConfig, memberByName } from "../config/parse.ts";
import { fingerprint, fingerprintFields } from "../config/fingerprint.ts";
import { createApp } from "../http/app.ts";
import { AssertionError } from "../lib/assert.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { KeelNode } from "../node/node.ts";
import { KvService } from "../service/kv.ts";
import { SessionService } from "../service/sessions.ts";
import { SqliteStorage } from "../storage/sqlite_storage.ts";
import { TcpTransport } from "../transport/tcp.ts";
import { version } from "../version.ts";
import { CliError, type Flags } from "./flags.ts";

export interface RunOptions {
  config: string;
  name: string | undefined;
  dataDir: string | undefined;
  logFormat: "json" | "text" | undefined;
  logLevel: "debug" | "info" | "warn" | "error" | undefined;
}

export function runOptions(flags: Flags): RunOptions {
  const config = flags.string("config");
  if (config === undefined) throw new CliError("keel run needs --config FILE");
  const logFormat = flags.choice("log-format", ["json", "text"] as const);
  const logLevel = flags.choice("log-level", ["debug", "info", "warn", "error"] as const);
  return {
    config,
    name: flags.string("name"),
    dataDir: flags.string("data-dir"),
    logFormat,
    logLevel,
  };
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
  const log: Logger = createLogger({
    level: options.logLevel ?? config.log.level,
    format: options.logFormat ?? config.log.format,
  }, { node: name });
  for (const warning of loaded.warnings) {
    log.warn("config warning", { path: warning.path, warning: warning.message });
  }

  const dataDir = options.dataDir ?? join(config.storage.dir, name);
  let storage: SqliteStorage;
  try {
    storage = SqliteStorage.open(dataDir);
  } catch (error: unknown) {
    log.error("cannot open storage", { dataDir, error });
    return 1;
  }
  let identity;
  try {
    identity = storage.identity(name);
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
    peer: `${member.peer.host}:${member.peer.port}`,
    http: `${member.http.host}:${member.http.port}`,
  });
  if (config.security.secretFile === undefined) {
    log.warn("dev mode: no security.secret_file, peer links are not authenticated");
  }

  const kv = new KvService();
  const service = new SessionService(kv);
  const transportLog = log.child({ component: "transport" });
  const transport = new TcpTransport({
    self: { name, incarnation: identity.incarnation },
    listen: { host: member.peer.host, port: member.peer.port },
    peers: config.members.filter((m) => m.name !== name).map((m) => ({
      name: m.name,
      host: m.peer.host,
      port: m.peer.port,
    })),
    clusterName: config.clusterName,
    fingerprint: fingerprint(config),
    fingerprintFields: fingerprintFields(config),
    log: (level, message, fields) => transportLog[level](message, fields),
    random: Math.random,
  });
  const node = new KeelNode({ config, name, identity, storage, transport, service, log, version });
  try {
    await node.start();
  } catch (error: unknown) {
    log.error("cannot start peer transport", {
      error,
      peer: `${member.peer.host}:${member.peer.port}`,
    });
    storage.close();
    return 1;
  }
  const app = createApp({
    node,
    kv,
    bodyBytesMax: config.http.bodyBytesMax,
    forwardTimeoutMs: config.http.requestTimeoutMs,
    logError: (message, error) => log.error(message, { error }),
  });
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: member.http.host,
      port: member.http.port,
      fetch: app.fetch,
      maxRequestBodySize: config.http.bodyBytesMax + 1024,
      idleTimeout: 60,
      error(error) {
        // A broken invariant is a bug: crash so the supervisor restarts a clean process.
        if (error instanceof AssertionError) {
          log.error("assertion failed; exiting", { error, stack: error.stack });
          process.exit(70);
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
    log.error("cannot listen for HTTP", { error, http: `${member.http.host}:${member.http.port}` });
    await node.stop();
    storage.close();
    return 1;
  }
  log.info("serving", { http: `http://${member.http.host}:${member.http.port}` });

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (signal: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      log.info("stopping", { signal });
      await server.stop(true);
      await node.stop();
      storage.close();
      resolve(0);
    };
    process.on("SIGINT", () => void stop("SIGINT"));
    process.on("SIGTERM", () => void stop("SIGTERM"));
  });
}
