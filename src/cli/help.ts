// The help of each command: `keel COMMAND --help` and `keel help COMMAND`. Each page gives
// the command's usage, what it does, every flag its parser accepts with its default, and
// an example. The flags are keyed by the parser's option names (the option tables beside
// each command), and test/cli/help.test.ts fails when a table has a flag its page lacks.

import { version } from "../version.ts";
import { defaultUrl, requestTimeoutMsDefault } from "./client.ts";
import { drillTimeoutMsDefault } from "./drill.ts";
import { memberTimeoutMsDefault } from "./members.ts";
import { ms } from "./output.ts";

/** FlagHelp is one flag on a command's page. */
export interface FlagHelp {
  /** How it is written, with its value: "--config FILE", "--json". */
  usage: string;
  /** The one-letter alias the parser accepts, if any: "-c". */
  short?: string;
  text: string;
  /** What applies when the flag is not given; omitted when nothing does. */
  default?: string;
}

/** CommandHelp is one command's page. */
export interface CommandHelp {
  /** Usage lines, without the leading "keel ". */
  usage: readonly string[];
  /** What the command does, in a few lines. */
  summary: string;
  /** Every flag the command's parser accepts, keyed by the parser's option name. */
  flags: Readonly<Record<string, FlagHelp>>;
  /** Further lines (how a node is found, tokens...), printed after the flags. */
  notes?: string;
  examples: readonly string[];
}

const help: FlagHelp = { usage: "--help", short: "-h", text: "Print this help." };
const json: FlagHelp = {
  usage: "--json",
  text: "Print the result as JSON on stdout, for scripts.",
};

/** TokenUse is what a command does with --token. */
type TokenUse = "admin" | "client" | "drill" | "none";

const tokenText: Record<TokenUse, FlagHelp> = {
  admin: {
    usage: "--token TOKEN",
    text: "The admin token (security.admin_token).",
    default: "KEEL_ADMIN_TOKEN, else security.admin_token of the --config FILE",
  },
  client: {
    usage: "--token TOKEN",
    text: "The client token, when the cluster sets security.client_token.",
    default: "KEEL_CLIENT_TOKEN, else security.client_token of the --config FILE",
  },
  drill: {
    usage: "--token TOKEN",
    text: "The admin token for the step-down (not needed with --kill); also sent as the " +
      "client token with the probe writes.",
    default: "KEEL_ADMIN_TOKEN / KEEL_CLIENT_TOKEN, else the --config FILE's tokens",
  },
  none: {
    usage: "--token TOKEN",
    text: "Accepted like every client command's, but not needed: this command reads " +
      "public routes.",
  },
};

/**
 * connectionFlags are the flags of every command that talks to a running node
 * (client.ts's connectionOptions): how to find it, its token, the time bound, --json.
 */
function connectionFlags(
  token: TokenUse,
  timeout: { text: string; defaultMs: number },
): Record<string, FlagHelp> {
  return {
    url: {
      usage: "--url URL",
      text: "The node's HTTP address, e.g. http://127.0.0.11:7080.",
      default: `KEEL_URL, else ${defaultUrl}`,
    },
    config: {
      usage: "--config FILE",
      short: "-c",
      text: "The cluster file: with --name, that member's http address; also the tokens " +
        "and, with security.tls, https and its ca_file.",
    },
    name: {
      usage: "--name NAME",
      short: "-n",
      text: "The member of the --config FILE to talk to.",
    },
    token: tokenText[token],
    timeout: { usage: "--timeout DURATION", text: timeout.text, default: ms(timeout.defaultMs) },
    json,
    help,
  };
}

const perRequest = { text: "Bound on each request.", defaultMs: requestTimeoutMsDefault };

const findingNode = `NODE is --url URL, or --config FILE --name NAME; without either, KEEL_URL, else
${defaultUrl}.`;

interface AdminPage {
  summary: string;
  /** Whether a follower's not_leader answer is followed to the leader. */
  followsLeader: boolean;
  flags?: Record<string, FlagHelp>;
  usage?: string;
}

function adminPage(name: string, page: AdminPage): CommandHelp {
  const follows = page.followsLeader
    ? "Sent to a follower, it goes on to the leader (once)."
    : "It acts on the node it is sent to, leader or not.";
  return {
    usage: [page.usage ?? `${name} [NODE] [--token TOKEN] [--json]`],
    summary: page.summary,
    // The admin commands share one parser: --to is accepted, then refused but by step-down.
    flags: {
      to: { usage: "--to NAME", text: "Refused: --to is for keel step-down only." },
      ...page.flags,
      ...connectionFlags("admin", perRequest),
    },
    notes: `${findingNode}
Needs the admin token (security.admin_token or admin_token_file of the cluster).
${follows}`,
    examples: [`keel ${name} --config cluster.yaml --name node-a --token "$(cat admin-token)"`],
  };
}

/** commandHelp is every command's page, by the name `keel --help` lists it under. */
export const commandHelp: Readonly<Record<string, CommandHelp>> = {
  run: {
    usage: [
      "run --config FILE [--name NAME] [--data-dir DIR] [--log-format json|text]",
      "    [--log-level debug|info|warn|error] [--peer-listen HOST:PORT]",
      "    [--http-listen HOST:PORT] [--gossip-listen HOST:PORT] [--form-without NAME[,NAME]]",
    ],
    summary: `Start this host's member of the cluster described in FILE, and run until stopped
(SIGTERM or SIGINT: a leader hands over leadership first). An empty data dir joins a
new cluster when every member is up and empty, or else catches up as the replacement
of this member.`,
    flags: {
      config: {
        usage: "--config FILE",
        short: "-c",
        text: "The cluster file, the same on every member (required).",
      },
      name: {
        usage: "--name NAME",
        short: "-n",
        text: "Which member of FILE this host is.",
        default: "the host name",
      },
      "data-dir": {
        usage: "--data-dir DIR",
        text: "Where this member keeps its log, state and snapshots.",
        default: "storage.dir/NAME",
      },
      "log-format": {
        usage: "--log-format json|text",
        text: "Logs on stderr: JSON lines, or text for people.",
        default: "log.format of FILE (json)",
      },
      "log-level": {
        usage: "--log-level debug|info|warn|error",
        text: "The least severe log lines written.",
        default: "log.level of FILE (info)",
      },
      "peer-listen": {
        usage: "--peer-listen HOST:PORT",
        text: "Bind the peer port here instead of the member's peer endpoint (behind NAT or " +
          "a proxy, or 0.0.0.0:PORT when members are addressed by DNS names); peers still " +
          "dial the configured one.",
        default: "the member's peer endpoint",
      },
      "http-listen": {
        usage: "--http-listen HOST:PORT",
        text: "Bind the HTTP API here instead of the member's http endpoint.",
        default: "the member's http endpoint",
      },
      "gossip-listen": {
        usage: "--gossip-listen HOST:PORT",
        text: "Where gossip (UDP) listens, for members found by gossip.",
        default: "the --peer-listen host at gossip.port",
      },
      "form-without": {
        usage: "--form-without NAME[,NAME]",
        text: "First start of a new cluster whose founding host never came up: form it " +
          "with the others once they are all up and empty (a majority, this one included), " +
          "and let the ones named join later as replacements. Refused for a data dir with " +
          "state, a name that is not another member, or a set that leaves no majority.",
        default: "none: every member must be up and empty",
      },
      help,
    },
    notes: `A member listed by name alone (found by gossip) must pass --peer-listen and
--http-listen: they are the addresses it advertises.
Exit codes: 2 for a bad FILE or bad flags, 1 when it cannot start (storage, ports),
70 on an internal error, 75 when this member finds it was rolled back.`,
    examples: [
      "keel run --config /etc/keel/cluster.yaml --name node-a",
      "keel run --config /etc/keel/cluster.yaml --name node-a --form-without node-c",
      "keel run --config examples/local-3.yaml --name node-a --data-dir data/node-a " +
      "--log-format text",
    ],
  },

  "check-config": {
    usage: ["check-config FILE [--json]", "check-config --config FILE [--json]"],
    summary: `Validate FILE and print its fingerprint and every problem and warning. Members'
DNS names are looked up (through resolver.servers when set) and each says how long
peers take to reach a replaced host; the secret and TLS files are read as keel run
would, on this host. Exit 0 when FILE is valid (warnings included), 2 when it is not.`,
    flags: {
      config: {
        usage: "--config FILE",
        short: "-c",
        text: "The cluster file, when not given as the argument.",
      },
      json: {
        usage: "--json",
        text: "Print a JSON report: ok, fingerprint, fields, problems, warnings, info.",
      },
      help,
    },
    examples: ["keel check-config /etc/keel/cluster.yaml", "keel check-config --json cluster.yaml"],
  },

  status: {
    usage: ["status [NODE] [--json]"],
    summary: `One node's view of the cluster (GET /status): role, term, leader, indexes, and
per member its role as known, address, connection, match index and lag.`,
    flags: connectionFlags("none", perRequest),
    notes: findingNode,
    examples: [
      "keel status --url http://127.0.0.11:7080",
      "keel status --config cluster.yaml --name node-b --json",
    ],
  },

  members: {
    usage: ["members [NODE] [--json]"],
    summary: `Every member's own view side by side: role, term, leader, commit and applied
index, reachable, and readiness (GET /readyz) with its failing checks. Asks each
member directly; exit 1 only when none can be reached.`,
    flags: connectionFlags("none", {
      text: "Bound on the request to each member.",
      defaultMs: memberTimeoutMsDefault,
    }),
    notes: findingNode,
    examples: ["keel members --config cluster.yaml --name node-a"],
  },

  snapshot: adminPage("snapshot", {
    summary: "Take a snapshot now and compact the log (POST /admin/snapshot).",
    followsLeader: true,
  }),

  "step-down": adminPage("step-down", {
    summary: "Hand leadership to another member and wait until it leads (POST /admin/step-down).",
    followsLeader: true,
    flags: {
      to: {
        usage: "--to NAME",
        text: "The member to hand leadership to.",
        default: "the most caught-up other member",
      },
    },
    usage: "step-down [--to NAME] [NODE] [--token TOKEN] [--json]",
  }),

  suspend: adminPage("suspend", {
    summary: "Make client writes on the node fail with 503 until resume (POST /admin/suspend).",
    followsLeader: false,
  }),

  resume: adminPage("resume", {
    summary: "Accept client writes again (POST /admin/resume).",
    followsLeader: false,
  }),

  shutdown: adminPage("shutdown", {
    summary: "Stop the node gracefully (POST /admin/shutdown); a leader hands over leadership " +
      "first.",
    followsLeader: false,
  }),

  drill: {
    usage: ["drill failover [--kill] [NODE] [--token TOKEN] [--json]"],
    summary: `Rehearse losing the leader: a probe writer PUTs keel-drill/probe every ~20ms while
the leader is asked to step down, or with --kill while you kill it yourself. Reports
the old and new leader, how long writes were unavailable, and the probe writes
attempted and failed. Exit 1 when no failover was measured.`,
    flags: {
      kill: {
        usage: "--kill",
        text: "Do not ask the leader to step down: wait while you kill it (no admin token " +
          "needed).",
        default: "ask the leader to step down",
      },
      ...connectionFlags("drill", {
        text: "Bound on the watch for a new leader after the change.",
        defaultMs: drillTimeoutMsDefault,
      }),
    },
    notes: findingNode,
    examples: [
      "keel drill failover --config cluster.yaml --name node-a --token TOKEN",
      "keel drill failover --kill --url http://127.0.0.11:7080",
    ],
  },

  kv: {
    usage: [
      "kv get KEY [--stale] [NODE] [--token TOKEN] [--json]",
      "kv put KEY VALUE|- [NODE] [--token TOKEN] [--json]",
      "kv delete KEY [NODE] [--token TOKEN] [--json]",
      "kv list [PREFIX] [--limit N] [--after KEY] [NODE] [--token TOKEN] [--json]",
    ],
    summary: `Read and write the built-in key-value service (/v1/kv). kv put KEY - reads the
value from stdin. Exit 1 when the key is not found or the write is refused.`,
    flags: {
      stale: {
        usage: "--stale",
        text: "kv get: read this node's state, without a round to the leader (may be old).",
        default: "a linearizable read",
      },
      limit: {
        usage: "--limit N",
        text: "kv list: at most N keys (1 to 10000; the node may cap it lower).",
        default: "the node's page size",
      },
      after: {
        usage: "--after KEY",
        text: "kv list: start after this key (the last one of the previous page).",
      },
      ...connectionFlags("client", perRequest),
    },
    notes: findingNode,
    examples: [
      "keel kv put greeting hello --url http://127.0.0.11:7080",
      "keel kv get greeting --config cluster.yaml --name node-b",
      "keel kv list app/ --limit 100 --json",
    ],
  },

  command: {
    usage: ["command BODY|- [--idempotency-key ID:SEQ] [--content-type TYPE] [NODE]"],
    summary: `Send a command to the service (POST /v1/command), in its encoding, and print the
result as the service answered it. - reads the body from stdin.`,
    flags: {
      "idempotency-key": {
        usage: "--idempotency-key ID:SEQ",
        text: "Apply the command at most once per client ID and sequence number, across retries.",
      },
      "content-type": {
        usage: "--content-type TYPE",
        text: "The body's media type.",
        default: "application/json",
      },
      stale: { usage: "--stale", text: "Refused: a command is always a write (see keel query)." },
      ...connectionFlags("client", perRequest),
    },
    notes: findingNode,
    examples: [`keel command '{"op":"put","key":"k","value":"v"}' --idempotency-key cli1:1`],
  },

  query: {
    usage: ["query BODY|- [--stale] [--content-type TYPE] [NODE]"],
    summary: `Ask the service a query (POST /v1/query) and print the answer. - reads the body
from stdin.`,
    flags: {
      stale: {
        usage: "--stale",
        text: "Read this node's state, without a round to the leader (may be old).",
        default: "a linearizable read",
      },
      "content-type": {
        usage: "--content-type TYPE",
        text: "The body's media type.",
        default: "application/json",
      },
      "idempotency-key": {
        usage: "--idempotency-key ID:SEQ",
        text: "Refused: a query writes nothing (see keel command).",
      },
      ...connectionFlags("client", perRequest),
    },
    notes: findingNode,
    examples: [`keel query '{"op":"get","key":"k"}' --stale --url http://127.0.0.11:7080`],
  },

  version: {
    usage: ["version [--json]"],
    summary: "Print what this binary is: version, commit, build time, target, Bun, " +
      "protocol and schema versions (also: keel --version, keel -v).",
    flags: { json, help },
    examples: ["keel version", "keel --version --json"],
  },

  help: {
    usage: ["help [COMMAND]", "COMMAND --help"],
    summary: "Print the overview of every command, or one command's own help.",
    flags: { help },
    examples: ["keel help", "keel help run", "keel kv --help"],
  },
};

/** helpWidth is the column at which help text is wrapped. */
const helpWidth = 92;

/** formatCommandHelp renders one command's page, or undefined for an unknown command. */
export function formatCommandHelp(name: string): string | undefined {
  if (!Object.hasOwn(commandHelp, name)) return undefined;
  const page = commandHelp[name]!;
  const lines: string[] = [`keel ${version} — keel ${name}`, "", "Usage:"];
  // A usage line that starts with spaces continues the one before it.
  for (const usage of page.usage) {
    lines.push(`  ${usage.startsWith(" ") ? "     " : "keel "}${usage}`);
  }
  lines.push("", page.summary, "", "Flags:");
  const flags = Object.values(page.flags);
  const labels = flags.map((flag) =>
    flag.short === undefined ? flag.usage : `${flag.short}, ${flag.usage}`
  );
  const width = Math.max(...labels.map((label) => label.length));
  for (const [index, flag] of flags.entries()) {
    const text = flag.default === undefined ? flag.text : `${flag.text} Default: ${flag.default}.`;
    lines.push(...wrap(`  ${labels[index]!.padEnd(width)}  `, text));
  }
  if (page.notes !== undefined) lines.push("", page.notes);
  lines.push("", page.examples.length === 1 ? "Example:" : "Examples:");
  for (const example of page.examples) lines.push(`  ${example}`);
  return lines.join("\n") + "\n";
}

/** wrap lays text out after a label, continuation lines indented to the text's column. */
function wrap(label: string, text: string): string[] {
  const indent = " ".repeat(label.length);
  const room = Math.max(30, helpWidth - label.length);
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > room) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines.map((text, index) => (index === 0 ? label : indent) + text);
}
