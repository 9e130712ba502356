// The keel command line: one binary, several commands. Parsing only; each command's
// work lives in its own file.

import { version } from "../version.ts";
import { checkConfig } from "./check_config.ts";
import { clientCommand } from "./client.ts";
import { CliError, Flags } from "./flags.ts";
import { run, runOptions } from "./run.ts";

export const usage = `keel ${version} — a replicated state-machine node in one executable

Usage:
  keel run --config FILE [--name NAME] [--data-dir DIR] [--log-format json|text]
  keel check-config FILE
  keel status  [--url URL | --config FILE --name NAME] [--json]
  keel kv get KEY [--stale]        [--url URL | --config FILE --name NAME]
  keel kv put KEY VALUE            [--url URL | --config FILE --name NAME]
  keel kv delete KEY               [--url URL | --config FILE --name NAME]
  keel kv list [PREFIX]            [--url URL | --config FILE --name NAME] [--json]
  keel version
  keel help

Commands:
  run           Start this host's member of the cluster named in FILE. --name picks the
                member (default: the host name); --data-dir overrides storage.dir/NAME.
                Logs are JSON lines on stderr (--log-format text for people).
  check-config  Validate FILE, print its fingerprint and every problem and warning.
  status        Show a node's view of the cluster (GET /status).
  kv            Read and write the built-in key-value service over HTTP.
  version       Print the version.

Finding a node: --url http://HOST:PORT, or --config FILE --name NAME (that member's
http address), or KEEL_URL in the environment. Default: http://127.0.0.1:7080.

Exit codes:
  0  success
  1  the operation failed (node unreachable, request refused, key not found)
  2  bad arguments or a bad config file

Example (a local 3-node cluster: make run):
  keel run --config examples/local-3.yaml --name node-a --data-dir data/node-a
  curl -X PUT --data hello http://127.0.0.11:7080/v1/kv/greeting
  curl http://127.0.0.12:7080/v1/kv/greeting
`;

/** main runs one command and returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(usage);
        return 0;
      case "version":
      case "--version":
      case "-v":
        process.stdout.write(`keel ${version}\n`);
        return 0;
      case "run": {
        const flags = new Flags(rest, {
          config: { type: "string", short: "c" },
          name: { type: "string", short: "n" },
          "data-dir": { type: "string" },
          "log-format": { type: "string" },
          "log-level": { type: "string" },
          help: { type: "boolean", short: "h" },
        });
        if (flags.boolean("help")) {
          process.stdout.write(usage);
          return 0;
        }
        return await run(runOptions(flags));
      }
      case "check-config": {
        const flags = new Flags(rest, {
          json: { type: "boolean" },
          config: { type: "string", short: "c" },
        });
        const file = flags.positionals[0] ?? flags.string("config");
        if (file === undefined) throw new CliError("keel check-config needs a FILE");
        return checkConfig(file, flags.boolean("json"));
      }
      case "status":
      case "kv":
        return await clientCommand(command, rest);
      default:
        throw new CliError(`Unknown command "${command}"`);
    }
  } catch (error: unknown) {
    if (error instanceof CliError) {
      process.stderr.write(`keel: ${error.message}\nRun "keel --help" for usage.\n`);
      return 2;
    }
    throw error;
  }
}
