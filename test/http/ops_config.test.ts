// security.admin_token_file: the admin token read from a file at load, so that it need not
// sit in the shared cluster file; and the token it yields opens the admin API.

import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../src/http/app.ts";
import { parseConfigText } from "../../src/config/parse.ts";
import { FakeNode, FakeOps } from "./ops_fake.ts";

const dir = mkdtempSync(join(tmpdir(), "keel-token-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tokenFile(name: string, text: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function configWith(security: string): ReturnType<typeof parseConfigText> {
  return parseConfigText(
    `cluster_name: t
members:
  - name: a
    peer: 127.0.0.1:7070
    http: 127.0.0.1:7080
security:
  secret_file: /etc/keel/secret
${security}
`,
    "cluster.yaml",
  );
}

describe("security.admin_token_file", () => {
  test("is read at load, without its final newline", () => {
    const path = tokenFile("token", "tok-from-file\n");
    const result = configWith(`  admin_token_file: ${path}`);
    expect(result.problems).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(result.config?.security.adminToken).toBe("tok-from-file");
  });

  test("and admin_token are mutually exclusive", () => {
    const path = tokenFile("token2", "x");
    const result = configWith(`  admin_token: "y"\n  admin_token_file: ${path}`);
    expect(result.config).toBeUndefined();
    expect(result.problems).toEqual([{
      path: "security.admin_token_file",
      message: 'give only one of "admin_token" and "admin_token_file"',
    }]);
  });

  test("must exist, hold a token and nothing else", () => {
    const cases: [string, RegExp][] = [
      [join(dir, "absent"), /cannot read ".*absent": no such file/],
      [tokenFile("empty", " \n"), /is empty/],
      [tokenFile("two", "one two\n"), /one token without spaces/],
      [tokenFile("big", "x".repeat(5000)), /more than the maximum of 4096 bytes/],
      [dir, /cannot read|bytes/],
    ];
    for (const [path, message] of cases) {
      const result = configWith(`  admin_token_file: ${path}`);
      expect(result.config).toBeUndefined();
      expect(result.problems.length).toBe(1);
      expect(result.problems[0]?.path).toBe("security.admin_token_file");
      expect(result.problems[0]?.message).toMatch(message);
    }
  });

  test("readable by others is a warning, and the token is never in a message", () => {
    const path = tokenFile("open", "very-secret", 0o644);
    const result = configWith(`  admin_token_file: ${path}`);
    expect(result.config?.security.adminToken).toBe("very-secret");
    expect(result.warnings.map((w) => w.path)).toEqual(["security.admin_token_file"]);
    expect(result.warnings[0]?.message).toContain("chmod 600");
    for (
      const problem of [
        ...result.warnings,
        ...configWith(`  admin_token_file: ${tokenFile("bad", "very secret")}`).problems,
      ]
    ) {
      expect(problem.message).not.toContain("very");
    }
  });

  test("the token from the file opens the admin API", async () => {
    const path = tokenFile("api", "file-token\n");
    const ops = new FakeOps();
    ops.adminToken = configWith(`  admin_token_file: ${path}`).config?.security.adminToken;
    const node = new FakeNode("a");
    const app = createApp({ node, kv: node.kv, bodyBytesMax: 1024, ops });
    const response = await app.request("/admin/suspend", {
      method: "POST",
      headers: { authorization: "Bearer file-token" },
    });
    expect(response.status).toBe(200);
    expect(ops.calls).toEqual(["suspend"]);
  });
});
