// keel as a library: build your own single executable around your own service, with the
// whole keel command line (run, status, members, admin, drills), config, replication, host
// replacement, health, metrics and dashboard. docs/services.md walks through it.
//
//   // my_main.ts
//   import { main } from "keel";
//   import { createCounter } from "./counter.ts";
//   process.exit(await main(process.argv.slice(2), { service: createCounter }));
//
//   bun build --compile my_main.ts --outfile dist/my-service
//   ./dist/my-service run --config cluster.yaml --name node-a

import { main as cliMain, type MainOptions } from "./cli/main.ts";
import { processIo } from "./cli/output.ts";
import { run } from "./cli/run.ts";
import type { ServiceFactory } from "./service/service.ts";

export type {
  ApplyContext,
  JsonServiceDefinition,
  LogPosition,
  Service,
  ServiceCodec,
  ServiceFactory,
  ServiceLogger,
  ServiceRole,
  StartContext,
} from "./service/service.ts";
export {
  bytesCodec,
  jsonCodec,
  jsonService,
  seededRandom,
  standaloneContext,
} from "./service/service.ts";
export { KvService } from "./service/kv.ts";
export type { MainOptions } from "./cli/main.ts";
export { version } from "./version.ts";

/**
 * main runs the keel command line (`run`, `status`, `members`, ... as `keel --help` lists)
 * with argv, `keel run` serving `options.service`, and returns the exit code.
 */
export function main(argv: string[], options: MainOptions = {}): Promise<number> {
  return cliMain(argv, processIo(), options);
}

/** RunNodeOptions are `keel run`'s flags, and the service. */
export interface RunNodeOptions {
  /** The cluster's config file (the same on every member). */
  config: string;
  /** This member's name in the config; the host name by default. */
  name?: string;
  /** Where this member keeps its data; storage.dir/NAME by default. */
  dataDir?: string;
  logFormat?: "json" | "text";
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Makes the replicated service; the built-in kv service by default. */
  service?: ServiceFactory;
}

/**
 * runNode starts one member, as `keel run` does, and resolves with its exit code once it
 * stops (a signal, an admin shutdown, or a fatal error).
 */
export function runNode(options: RunNodeOptions): Promise<number> {
  return run({
    config: options.config,
    name: options.name,
    dataDir: options.dataDir,
    logFormat: options.logFormat,
    logLevel: options.logLevel,
    peerListen: undefined,
    httpListen: undefined,
    service: options.service,
  });
}
