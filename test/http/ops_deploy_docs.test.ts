// docs/deploy.md's configuration reference is checked against the config schema: every key
// that src/config/schema.ts accepts has a row, and every row is a key it accepts.

import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfigText } from "../../src/config/parse.ts";

const root = join(import.meta.dir, "..", "..");
const docs = readFileSync(join(root, "docs", "deploy.md"), "utf8");

/**
 * schemaKeys reads the `keys` table of config/schema.ts (the keys each mapping may hold) and
 * returns every setting's dotted path, members' fields as members[].name.
 */
function schemaKeys(): string[] {
  const source = readFileSync(join(root, "src", "config", "schema.ts"), "utf8");
  const table = /const keys = \{([\s\S]*?)\} as const;/.exec(source)?.[1];
  if (table === undefined) throw new Error("schema.ts no longer has `const keys = {...} as const`");
  const sections = new Map<string, string[]>();
  for (const match of table.matchAll(/(\w+): \[([^\]]*)\]/g)) {
    sections.set(match[1]!, [...match[2]!.matchAll(/"(\w+)"/g)].map((m) => m[1]!));
  }
  const paths: string[] = [];
  for (const key of sections.get("root") ?? []) {
    const fields = key === "members" ? sections.get("member") : sections.get(key);
    // A section (storage, raft, ...) is only a heading; members is a setting itself.
    if (fields === undefined || key === "members") paths.push(key);
    for (const field of fields ?? []) {
      // A field that is a section itself (security.tls) counts by its own fields.
      const nested = key === "members" ? undefined : sections.get(field);
      if (nested !== undefined) {
        for (const inner of nested) paths.push(`${key}.${field}.${inner}`);
      } else paths.push(key === "members" ? `members[].${field}` : `${key}.${field}`);
    }
  }
  return paths;
}

/** documentedKeys are the first cells of the reference table's rows. */
function documentedKeys(): string[] {
  const section = docs.split("## Configuration reference")[1] ?? "";
  return [...section.matchAll(/^\| `([^`]+)` +\|/gm)].map((match) => match[1]!);
}

test("the schema is read: it has the sections and keys we know of", () => {
  const keys = schemaKeys();
  expect(keys).toContain("cluster_name");
  expect(keys).toContain("members[].peer");
  expect(keys).toContain("raft.election_timeout");
  expect(keys).toContain("security.admin_token_file");
  expect(keys.length).toBeGreaterThan(15);
});

test("every config key has a row in docs/deploy.md, and every row is a config key", () => {
  expect(documentedKeys().sort()).toEqual(schemaKeys().sort());
});

test("the minimal production file in docs/deploy.md is valid apart from its files", () => {
  const yaml = /A minimal production file:\n\n```yaml\n([\s\S]*?)```/.exec(docs)?.[1];
  expect(yaml).toBeDefined();
  const result = parseConfigText(yaml ?? "", "deploy.md");
  // The secret and token files do not exist here; nothing else may be wrong.
  expect(result.problems.map((problem) => problem.path)).toEqual(["security.admin_token_file"]);
});
