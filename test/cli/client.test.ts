// keel status, kv, argument errors and unreachable nodes, against a fake cluster.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deadUrl, FakeCluster, runCli } from "./fake_cluster.ts";

let cluster: FakeCluster;
let dir: string;
let a: string;

beforeAll(() => {
  cluster = new FakeCluster();
  a = cluster.member("node-a").url;
  dir = mkdtempSync(join(tmpdir(), "keel-cli-"));
});

afterAll(() => {
  cluster.stop();
  rmSync(dir, { recursive: true, force: true });
});

function configFor(extra = ""): string {
  return cluster.writeConfig(dir, extra);
}

describe("keel status", () => {
  test("prints a summary and one row per member with its role as known", async () => {
    const run = await runCli(["status", "--url", a]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const lines = run.stdout.split("\n");
    expect(lines[0]).toBe("node-a: leader, term 3, cluster fake, keel 0.1.0, up 1m1s");
    expect(run.stdout).toContain("indexes      commit 40  applied 40  last 40  first 1");
    const header = lines.find((line) => line.startsWith("MEMBER"));
    expect(header?.split(/\s+/)).toEqual([
      "MEMBER",
      "ROLE",
      "ADDRESS",
      "PEER",
      "CONNECTED",
      "MATCH",
      "LAG",
      "NOTE",
    ]);
    const rows = lines.filter((line) => /^node-\w\s/.test(line)).map((line) => line.split(/\s+/));
    expect(rows.map((row) => [row[0], row[1], row[2], row[4], row[5], row[6]])).toEqual([
      ["node-a", "leader", a, "yes", "40", "0"],
      ["node-b", "follower", cluster.member("node-b").url, "yes", "39", "1"],
      ["node-c", "follower", cluster.member("node-c").url, "yes", "38", "2"],
    ]);
  });

  test("--json prints /status as parseable JSON", async () => {
    const run = await runCli(["status", "--json", "--url", cluster.member("node-b").url]);
    expect(run.code).toBe(0);
    const body = JSON.parse(run.stdout);
    expect(body.name).toBe("node-b");
    expect(body.leader).toBe("node-a");
    expect(body.members.map((m: { name: string }) => m.name)).toEqual([
      "node-a",
      "node-b",
      "node-c",
    ]);
  });

  test("finds the node from --config and --name, and from KEEL_URL", async () => {
    const byConfig = await runCli(["status", "--config", configFor(), "--name", "node-c"]);
    expect(byConfig.code).toBe(0);
    expect(byConfig.stdout.startsWith("node-c: follower")).toBe(true);
    const byEnv = await runCli(["status"], { env: { KEEL_URL: cluster.member("node-b").url } });
    expect(byEnv.stdout.startsWith("node-b: follower")).toBe(true);
    // --url wins over KEEL_URL.
    const both = await runCli(["status", "--url", a], {
      env: { KEEL_URL: cluster.member("node-b").url },
    });
    expect(both.stdout.startsWith("node-a: leader")).toBe(true);
  });

  test("an unreachable node is exit 1 with the URL and the reason", async () => {
    const url = await deadUrl();
    const run = await runCli(["status", "--url", url]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe(`keel: Cannot reach ${url}: connection refused\n`);
  });

  test("a node that does not answer in time is exit 1 naming the timeout", async () => {
    const slow = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async () => {
        await Bun.sleep(2000);
        return new Response("{}");
      },
    });
    try {
      const run = await runCli(["status", "--url", `127.0.0.1:${slow.port}`, "--timeout", "100ms"]);
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(
        `keel: Cannot reach http://127.0.0.1:${slow.port}: no answer within 100ms\n`,
      );
    } finally {
      await slow.stop(true);
    }
  });
});

describe("bad arguments are exit 2 with a pointer to --help", () => {
  const cases: [string, string[], string][] = [
    ["an unknown command", ["frobnicate"], 'Unknown command "frobnicate"'],
    ["an unknown flag", ["status", "--colour"], "--colour"],
    ["a stray argument", ["status", "extra"], 'keel status takes no arguments; got "extra"'],
    ["kv without a verb", ["kv"], "keel kv needs get, put, delete or list; got nothing"],
    ["kv put without a value", ["kv", "put", "k"], "keel kv put needs a KEY and a VALUE"],
    ["kv get with two keys", ["kv", "get", "a", "b"], 'got an extra argument "b"'],
    [
      "a bad --timeout",
      ["status", "--timeout", "soon"],
      '--timeout must be a duration such as "500ms" or "5s"; got "soon"',
    ],
    [
      "a bad --url",
      ["status", "--url", "ftp://x"],
      'must be an http:// or https:// URL; got "ftp://x"',
    ],
    ["--name without --config", ["status", "--name", "node-a"], "give --config too"],
    ["--to outside step-down", ["snapshot", "--to", "node-b"], "--to is for keel step-down only"],
    ["drill without a kind", ["drill"], "keel drill needs a kind of drill: failover; got nothing"],
    ["a bad --limit", ["kv", "list", "--limit", "0"], "--limit must be a whole number"],
  ];
  for (const [what, argv, message] of cases) {
    test(what, async () => {
      const run = await runCli(argv);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain(message);
      expect(run.stderr).toContain('Run "keel --help" for usage.');
    });
  }

  test("--config needs --name and names the members", async () => {
    const run = await runCli(["status", "--config", configFor()]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      "--config needs --name to pick a member (one of node-a, node-b, node-c)",
    );
  });

  test("a member the config does not have", async () => {
    const file = configFor();
    const run = await runCli(["status", "--config", file, "--name", "node-z"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`${file}: no member named "node-z"`);
  });

  test("a broken config file is reported with its problems", async () => {
    const file = join(dir, "broken.yaml");
    writeFileSync(file, "cluster_name: fake\nmembers: []\n");
    const run = await runCli(["members", "--config", file, "--name", "node-a"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("members");
  });
});

describe("keel kv", () => {
  test("put, get, list and delete round trip", async () => {
    expect((await runCli(["kv", "put", "greeting", "hello", "--url", a])).stdout).toMatch(
      /^ok, index \d+\n$/,
    );
    const get = await runCli(["kv", "get", "greeting", "--url", a]);
    expect(get).toEqual({ code: 0, stdout: "hello", stderr: "" });
    const json = await runCli(["kv", "get", "greeting", "--json", "--url", a]);
    expect(JSON.parse(json.stdout)).toMatchObject({ key: "greeting", value: "hello" });
    const list = await runCli(["kv", "list", "gree", "--url", a]);
    expect(list.stdout).toBe("KEY       VALUE\ngreeting  hello\n");
    expect((await runCli(["kv", "delete", "greeting", "--url", a])).stdout).toMatch(/^deleted/);
    expect((await runCli(["kv", "delete", "greeting", "--url", a])).stdout).toMatch(
      /^no such key/,
    );
  });

  test("put KEY - reads the value from stdin", async () => {
    const run = await runCli(["kv", "put", "from-stdin", "-", "--url", a], {
      stdin: "line one\nline two\n",
    });
    expect(run.code).toBe(0);
    expect(cluster.kv.get("from-stdin")).toBe("line one\nline two\n");
  });

  test("a key that is not there is exit 1", async () => {
    const run = await runCli(["kv", "get", "absent", "--url", a]);
    expect(run).toEqual({ code: 1, stdout: "", stderr: 'keel: Key "absent" not found\n' });
  });

  test("a refused write names the node, the code and the message", async () => {
    cluster.suspended.add("node-a");
    try {
      const run = await runCli(["kv", "put", "k", "v", "--url", a]);
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(`keel: ${a} answered 503 unavailable: Suspended\n`);
    } finally {
      cluster.suspended.delete("node-a");
    }
  });
});

describe("help and version", () => {
  test("--help documents every command and the exit codes", async () => {
    const run = await runCli(["--help"]);
    expect(run.code).toBe(0);
    for (
      const command of [
        "keel run",
        "keel check-config",
        "keel status",
        "keel members",
        "keel snapshot",
        "keel step-down",
        "keel suspend",
        "keel drill failover",
        "keel kv get",
        "keel kv put",
        "keel version",
      ]
    ) {
      expect(run.stdout).toContain(command);
    }
    expect(run.stdout).toMatch(/Exit codes:\n\s+0\s+success\n\s+1\s+the operation failed/);
    expect(run.stdout).toContain("2  bad arguments or a bad config file");
    // A command's --help is its own page (test/cli/help.test.ts), not an attempt to run it.
    const members = await runCli(["members", "--help"]);
    expect(members.code).toBe(0);
    expect(members.stdout).toContain("Usage:\n  keel members");
  });

  test("version", async () => {
    expect((await runCli(["version"])).stdout).toMatch(/^keel \d+\.\d+\.\d+/);
  });
});

test("the real entry point exits with the documented codes", async () => {
  const entry = join(import.meta.dir, "..", "..", "src", "main.ts");
  const spawn = async (args: string[]) => {
    const child = Bun.spawn([process.execPath, entry, ...args], {
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, KEEL_URL: "", KEEL_ADMIN_TOKEN: "" },
    });
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
    return { code, stderr };
  };
  const url = await deadUrl();
  expect(await spawn(["status", "--url", url])).toEqual({
    code: 1,
    stderr: `keel: Cannot reach ${url}: connection refused\n`,
  });
  expect((await spawn(["status", "--bogus"])).code).toBe(2);
  expect((await spawn(["status", "--url", a, "--json"])).code).toBe(0);
});
