// Every command's own help, from the compiled binary (make build): `keel CMD --help` and
// `keel help CMD` print that command's page, exit 0, differ from the overview, and name
// every flag the command's parser accepts (read from the parser's option table, so adding
// a flag without its help fails here).

import { beforeAll, describe, expect, test } from "bun:test";
import { adminOptions } from "../../src/cli/admin.ts";
import { connectionOptions, kvOptions } from "../../src/cli/client.ts";
import { commandOptions } from "../../src/cli/command.ts";
import { drillOptions } from "../../src/cli/drill.ts";
import { commandHelp } from "../../src/cli/help.ts";
import { checkConfigFlagOptions, runFlagOptions, versionFlagOptions } from "../../src/cli/main.ts";
import { binaryPath, requireBinary } from "../support/cluster.ts";

type OptionTable = Readonly<Record<string, { type: string; short?: string }>>;

/**
 * parsers maps each command to the option table its parser is built from. A command that
 * `keel --help` lists but this map lacks fails the first test: give it a table (or {}
 * when it parses no flags) and a page in src/cli/help.ts.
 */
const parsers: Record<string, OptionTable> = {
  run: runFlagOptions,
  "check-config": checkConfigFlagOptions,
  status: connectionOptions,
  members: connectionOptions,
  snapshot: adminOptions,
  "step-down": adminOptions,
  suspend: adminOptions,
  resume: adminOptions,
  shutdown: adminOptions,
  drill: drillOptions,
  kv: kvOptions,
  command: commandOptions,
  query: commandOptions,
  version: versionFlagOptions,
  help: {},
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function keel(...args: string[]): Run {
  const run = Bun.spawnSync([binaryPath, ...args], { env: { PATH: process.env.PATH ?? "" } });
  return {
    code: run.exitCode,
    stdout: run.stdout.toString(),
    stderr: run.stderr.toString(),
  };
}

let overview: string;
let listed: string[];

beforeAll(() => {
  requireBinary();
  const run = keel("--help");
  expect(run.code).toBe(0);
  overview = run.stdout;
  // "  keel run --config FILE ...", "  keel suspend | resume | shutdown ..."
  listed = [...overview.matchAll(/^ {2}keel ([a-z-]+(?: \| [a-z-]+)*)/gm)]
    .flatMap((match) => match[1]!.split(" | "));
});

test("the overview lists the commands, and each has a parser table and a page", () => {
  expect(listed).toContain("run");
  expect(listed).toContain("kv");
  expect(listed).toContain("resume");
  expect(listed.length).toBeGreaterThan(12);
  for (const command of listed) {
    expect({ command, parser: Object.hasOwn(parsers, command) }).toEqual({ command, parser: true });
    expect({ command, page: Object.hasOwn(commandHelp, command) }).toEqual({ command, page: true });
  }
});

test("each page documents exactly the flags its parser accepts, with their short forms", () => {
  for (const [command, table] of Object.entries(parsers)) {
    const page = commandHelp[command]!;
    const documented = Object.keys(page.flags).sort();
    // version and help parse no flags, but answer --help like every command.
    const accepted = [...new Set([...Object.keys(table), "help"])].sort();
    expect({ command, flags: documented }).toEqual({ command, flags: accepted });
    for (const [name, option] of Object.entries(table)) {
      expect({ command, name, short: page.flags[name]!.short }).toEqual({
        command,
        name,
        short: option.short === undefined ? undefined : `-${option.short}`,
      });
    }
  }
});

describe("keel COMMAND --help, from the binary", () => {
  test("prints the command's own page with every flag of its parser, and exits 0", () => {
    for (const command of listed) {
      const run = keel(command, "--help");
      expect({ command, code: run.code, stderr: run.stderr }).toEqual({
        command,
        code: 0,
        stderr: "",
      });
      const page = run.stdout;
      expect(page).not.toBe(overview);
      expect(page.split("\n")[0]).toMatch(new RegExp(`^keel \\S+ — keel ${command}$`));
      expect(page).toContain(`Usage:\n  keel ${command}`);
      expect(page).toMatch(/\nExamples?:\n {2}keel /);
      for (const [name, option] of Object.entries(parsers[command]!)) {
        const flag = option.short === undefined ? `--${name}` : `-${option.short}, --${name}`;
        expect({ command, flag, shown: page.includes(`  ${flag}`) }).toEqual({
          command,
          flag,
          shown: true,
        });
      }
    }
  });

  test("the pages differ from one another and name their own flags", () => {
    const run = keel("run", "--help").stdout;
    const status = keel("status", "--help").stdout;
    const kv = keel("kv", "--help").stdout;
    const drill = keel("drill", "--help").stdout;
    const checkConfig = keel("check-config", "--help").stdout;
    expect(new Set([run, status, kv, drill, checkConfig]).size).toBe(5);
    expect(run).toContain("--data-dir DIR");
    expect(run).toContain("Default: storage.dir/NAME.");
    expect(status).not.toContain("--data-dir");
    expect(kv).toContain("--limit N");
    expect(drill).toContain("--kill");
    expect(drill).toContain("Default: 30s.");
    expect(checkConfig).toContain("--json");
    expect(checkConfig).not.toContain("--url");
  });

  test("-h, --help after other arguments, and keel help COMMAND print the same page", () => {
    const page = keel("kv", "--help").stdout;
    expect(keel("kv", "get", "some-key", "-h").stdout).toBe(page);
    expect(keel("help", "kv").stdout).toBe(page);
    expect(keel("drill", "failover", "--help").stdout).toBe(keel("help", "drill").stdout);
    expect(keel("help").stdout).toBe(overview);
  });

  test("help for an unknown command is a usage error", () => {
    const run = keel("help", "frobnicate");
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('keel: Unknown command "frobnicate"');
    expect(keel("frobnicate", "--help").code).toBe(2);
  });
});
