// The keel command line: one binary, several commands. Parsing only; each command's
// work lives in its own file.

import { version } from "../version.ts";
import { checkConfig } from "./check_config.ts";
import { adminCommand } from "./admin.ts";
import { CommandError, defaultUrl, kvCommand, statusCommand } from "./client.ts";
import { drillCommand } from "./drill.ts";
import { CliError, Flags } from "./flags.ts";
import { formatCommandHelp } from "./help.ts";
import { membersCommand } from "./members.ts";
import { type Io, processIo } from "./output.ts";
import { run, runOptions } from "./run.ts";
import { serviceCommand } from "./command.ts";
import { formatVersion, versionInfo } from "./version.ts";
import type { ServiceFactory } from "../service/service.ts";

export const usage = `keel ${version} — a replicated state-machine node in one executable

Usage:
  keel run --config FILE [--name NAME] [--data-dir DIR] [--log-format json|text]
           [--log-level debug|info|warn|error] [--peer-listen HOST:PORT] [--http-listen HOST:PORT]
           [--gossip-listen HOST:PORT] [--form-without NAME[,NAME]]
  keel check-config FILE
  keel status                          [NODE] [--json]
  keel members                         [NODE] [--json]
  keel snapshot                        [NODE] [TOKEN] [--json]
  keel step-down [--to NAME]           [NODE] [TOKEN] [--json]
  keel suspend | resume | shutdown     [NODE] [TOKEN] [--json]
  keel drill failover [--kill]         [NODE] [TOKEN] [--json]
  keel kv get KEY [--stale]            [NODE] [TOKEN] [--json]
  keel kv put KEY VALUE|-              [NODE] [TOKEN] [--json]
  keel kv delete KEY                   [NODE] [TOKEN] [--json]
  keel kv list [PREFIX] [--limit N] [--after KEY]  [NODE] [TOKEN] [--json]
  keel command BODY|- [--idempotency-key ID:SEQ]  [NODE] [TOKEN]
  keel query BODY|- [--stale]          [NODE] [TOKEN]
  keel version [--json]
  keel help [COMMAND]                  (or keel COMMAND --help: its flags, defaults, examples)

  NODE  = --url URL | --config FILE --name NAME      (and --timeout DURATION)
  TOKEN = --token TOKEN          (admin commands: the admin token; kv: the client token)

Commands:
  run           Start this host's member of the cluster named in FILE. --name picks the
                member (default: the host name); --data-dir overrides storage.dir/NAME.
                Logs are JSON lines on stderr (--log-format text for people).
                --peer-listen / --http-listen bind elsewhere than the configured
                endpoints (behind a proxy or NAT, or 0.0.0.0:PORT when members are
                addressed by DNS names); peers still dial the configured ones.
                A member listed by name alone (found by gossip) must pass both: they
                are the addresses it advertises. --gossip-listen: where gossip (UDP)
                listens, default the --peer-listen host at gossip.port.
  check-config  Validate FILE, print its fingerprint and every problem and warning
                (the secret and TLS files are read as keel run would, here).
  status        One node's view of the cluster (GET /status): role, term, leader, indexes,
                and per member its role as known, address, connection, match index, lag.
  members       Every member's own view side by side: role, term, leader, commit and
                applied index, reachable, and readiness (GET /readyz) with failing checks.
                Asks each member directly (--timeout per member, default 2s).
  snapshot      Take a snapshot now and compact the log (POST /admin/snapshot).
  step-down     Hand leadership to another member (--to NAME, or the most caught-up one)
                and wait until it leads. Sent to a follower, it goes on to the leader.
  suspend       Make client writes on the node fail with 503 until resume.
  resume        Accept client writes again.
  shutdown      Stop the node gracefully; a leader hands over leadership first.
  drill failover
                Rehearse losing the leader: a probe writer PUTs keel-drill/probe every
                ~20ms while the leader is asked to step down, or with --kill while you
                kill it yourself (the drill only watches and needs no token). Reports the
                old and new leader, how long writes were unavailable, and the probe
                writes attempted and failed. --timeout bounds the watch for a new leader
                (default 30s).
  kv            Read and write the built-in key-value service. kv put KEY - reads the
                value from stdin; kv get --stale reads this node's state without a
                round to the leader.
  command       Send a command to the service (POST /v1/command), in its encoding (JSON
                by default), and print the result. - reads the body from stdin.
  query         Ask the service a query (POST /v1/query) and print the answer; --stale
                reads this node's state without a round to the leader.
  version       Print the version, commit, build time and target, Bun runtime, peer
                protocol versions and data-dir schema version (--json for scripts).

Finding a node: --url http://HOST:PORT, or --config FILE --name NAME (that member's http
address), or KEEL_URL in the environment. Default: ${defaultUrl}.
Admin token (snapshot, step-down, suspend, resume, shutdown, drill): --token TOKEN, or
KEEL_ADMIN_TOKEN in the environment, or security.admin_token of the --config FILE.
Client token (kv, when the cluster sets security.client_token): --token TOKEN, or
KEEL_CLIENT_TOKEN, or security.client_token of the --config FILE. With security.tls in
the --config FILE, members are reached over https, trusting its ca_file.
--timeout bounds each request (default 10s) unless a command says otherwise.
--json prints the result as JSON on stdout, for scripts.

Exit codes:
  0  success
  1  the operation failed (node unreachable, request refused, key not found, drill
     without a measured failover)
  2  bad arguments or a bad config file

Example (a local 3-node cluster: make run):
  keel run --config examples/local-3.yaml --name node-a --data-dir data/node-a
  keel members --url http://127.0.0.11:7080
  keel kv put greeting hello --url http://127.0.0.11:7080
  keel kv get greeting --config examples/local-3.yaml --name node-b
  keel drill failover --config examples/local-3.yaml --name node-a --token TOKEN
`;

/** runFlagOptions is the option table of `keel run` (every entry has a line in its help). */
export const runFlagOptions = {
  config: { type: "string", short: "c" },
  name: { type: "string", short: "n" },
  "data-dir": { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  "peer-listen": { type: "string" },
  "http-listen": { type: "string" },
  "gossip-listen": { type: "string" },
  "form-without": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** checkConfigFlagOptions is the option table of `keel check-config`. */
export const checkConfigFlagOptions = {
  json: { type: "boolean" },
  config: { type: "string", short: "c" },
  help: { type: "boolean", short: "h" },
} as const;

/** versionFlagOptions is the option table of `keel version`. */
export const versionFlagOptions = {
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * helpText is the help asked for: the overview without a command, else that command's own
 * page. An unknown command is a usage mistake.
 */
function helpText(command: string | undefined): string {
  if (command === undefined) return usage;
  const page = formatCommandHelp(command);
  if (page === undefined) throw new CliError(`Unknown command "${command}"`);
  return page;
}

/** MainOptions customize the keel command line of a binary built with keel as a library. */
export interface MainOptions {
  /** Makes the service `keel run` replicates; the built-in kv service by default. */
  service?: ServiceFactory;
}

/** main runs one command and returns the process exit code. */
export async function main(
  argv: string[],
  io: Io = processIo(),
  mainOptions: MainOptions = {},
): Promise<number> {
  const [command, ...rest] = argv;
  try {
    const dashes = rest.indexOf("--");
    const options = dashes === -1 ? rest : rest.slice(0, dashes);
    const asksHelp = options.includes("--help") || options.includes("-h");
    if (asksHelp && command !== "--help" && command !== "-h") {
      io.out(helpText(command));
      return 0;
    }
    switch (command) {
      case undefined:
      case "--help":
      case "-h":
        io.out(usage);
        return 0;
      case "help":
        if (rest.length > 1) throw new CliError("keel help takes at most one COMMAND");
        io.out(helpText(rest[0]));
        return 0;
      case "version":
      case "--version":
      case "-v": {
        const flags = new Flags(rest, versionFlagOptions);
        if (flags.positionals.length > 0) throw new CliError("keel version takes no arguments");
        const info = versionInfo();
        io.out(flags.boolean("json") ? `${JSON.stringify(info)}\n` : formatVersion(info));
        return 0;
      }
      case "run": {
        const flags = new Flags(rest, runFlagOptions);
        return await run({ ...runOptions(flags), service: mainOptions.service });
      }
      case "check-config": {
        const flags = new Flags(rest, checkConfigFlagOptions);
        const file = flags.positionals[0] ?? flags.string("config");
        if (file === undefined) throw new CliError("keel check-config needs a FILE");
        return await checkConfig(file, flags.boolean("json"));
      }
      case "status":
        return await statusCommand(rest, io);
      case "members":
        return await membersCommand(rest, io);
      case "kv":
        return await kvCommand(rest, io);
      case "snapshot":
      case "step-down":
      case "suspend":
      case "resume":
      case "shutdown":
        return await adminCommand(command, rest, io);
      case "drill":
        return await drillCommand(rest, io);
      case "command":
      case "query":
        return await serviceCommand(command, rest, io);
      default:
        throw new CliError(`Unknown command "${command}"`);
    }
  } catch (error: unknown) {
    if (error instanceof CliError) {
      io.err(`keel: ${error.message}\nRun "keel --help" for usage.\n`);
      return 2;
    }
    if (error instanceof CommandError) {
      io.err(`keel: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
