// Import rules that keep the architecture honest (docs/architecture.md):
// src/consensus is pure and synchronous, and folders depend downward only.

import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

const root = join(import.meta.dir, "..", "..");

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts"))
    .map((file) => join(root, dir, file));
}

/** Patterns a pure consensus core must not contain, with the reason shown on failure. */
const forbidden: [RegExp, string][] = [
  [/from\s+["']bun(:[^"']*)?["']/, "imports Bun"],
  [/from\s+["']node:/, "imports node:"],
  [/from\s+["']hono/, "imports hono"],
  [/\bawait\b/, "uses await"],
  [/\basync\b/, "is async"],
  [/\bDate\.|new Date\b/, "reads the clock"],
  [/\bperformance\.now\b/, "reads the clock"],
  [/\bsetTimeout\b|\bsetInterval\b|\bqueueMicrotask\b/, "schedules timers"],
  [/\bMath\.random\b/, "uses Math.random"],
  [/\bcrypto\./, "uses crypto randomness"],
  [/\bprocess\./, "reads the process"],
];

export function violations(text: string): string[] {
  const code = text.replace(/\/\/.*$/gm, "").replace(/\/\*[\s\S]*?\*\//g, "");
  return forbidden.filter(([pattern]) => pattern.test(code)).map(([, why]) => why);
}

test("src/consensus does no I/O, reads no clock and uses no randomness", () => {
  const problems: string[] = [];
  for (const file of sources("src/consensus")) {
    for (const why of violations(readFileSync(file, "utf8"))) {
      problems.push(`${relative(root, file)} ${why}`);
    }
  }
  expect(problems).toEqual([]);
});

test("src/consensus imports only itself and src/lib", () => {
  const problems: string[] = [];
  for (const file of sources("src/consensus")) {
    for (const match of readFileSync(file, "utf8").matchAll(/from\s+["']([^"']+)["']/g)) {
      const target = match[1]!;
      if (!target.startsWith("./") && !target.startsWith("../lib/")) {
        problems.push(`${relative(root, file)} imports ${target}`);
      }
    }
  }
  expect(problems).toEqual([]);
});

test("src/http sees the node only through its api interface", () => {
  const problems: string[] = [];
  for (const file of sources("src/http")) {
    for (const match of readFileSync(file, "utf8").matchAll(/from\s+["']([^"']+)["']/g)) {
      const target = match[1]!;
      if (/\.\.\/(node|storage|transport|cli)\//.test(target)) {
        problems.push(`${relative(root, file)} imports ${target}`);
      }
    }
  }
  expect(problems).toEqual([]);
});

test("the tidy rules catch each forbidden pattern", () => {
  expect(violations(`import { Database } from "bun:sqlite";`)).toContain("imports Bun");
  expect(violations(`import fs from "node:fs";`)).toContain("imports node:");
  expect(violations(`const t = Date.now();`)).toContain("reads the clock");
  expect(violations(`setTimeout(() => {}, 1);`)).toContain("schedules timers");
  expect(violations(`const r = Math.random();`)).toContain("uses Math.random");
  expect(violations(`async function f() { await g(); }`)).toContain("uses await");
  expect(violations(`// Date.now() in a comment is fine`)).toEqual([]);
});
