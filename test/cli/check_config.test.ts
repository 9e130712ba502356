// keel check-config reads the secret and TLS files as keel run would, on this host, and
// reports what is wrong with them as warnings (exit 0: the file itself is valid).

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkConfig } from "../../src/cli/check_config.ts";

const dir = mkdtempSync(join(tmpdir(), "keel-check-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const members = `cluster_name: test
members:
  - name: node-a
    peer: 127.0.0.11:7070
    http: 127.0.0.11:7080
`;

/** check runs checkConfig --json on the text and returns its exit code and report. */
async function check(
  text: string,
): Promise<{ code: number; warnings: { path: string; message: string }[] }> {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  const written: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string) => {
    written.push(chunk);
    return true;
  }) as typeof process.stdout.write;
  let code: number;
  try {
    code = await checkConfig(file, true);
  } finally {
    process.stdout.write = write;
  }
  return { code, warnings: JSON.parse(written.join("")).warnings };
}

test("an unreadable secret file is a warning that names it, and the exit is still 0", async () => {
  const missing = join(dir, "no-such-secret");
  const result = await check(`${members}security:\n  secret_file: ${missing}\n`);
  expect(result.code).toBe(0);
  expect(result.warnings).toContainEqual({
    path: "security.secret_file",
    message: `Cannot read security.secret_file "${missing}": no such file (on this host; ` +
      "keel run would stop with exit 2)",
  });
});

test("a readable, long enough secret gives no warning; a short one says so", async () => {
  const good = join(dir, "good-secret");
  writeFileSync(good, "x".repeat(40), { mode: 0o600 });
  const ok = await check(`${members}security:\n  secret_file: ${good}\n`);
  expect(ok.warnings.filter((w) => w.path.startsWith("security"))).toEqual([]);
  const short = join(dir, "short-secret");
  writeFileSync(short, "abc", { mode: 0o600 });
  const weak = await check(`${members}security:\n  secret_file: ${short}\n`);
  expect(weak.warnings.map((w) => w.message)).toContainEqual(
    expect.stringContaining("holds only 3 bytes"),
  );
});
