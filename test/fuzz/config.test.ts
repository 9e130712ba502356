// Fuzzing of the cluster file reader (src/config/parse.ts): parseConfigText must answer
// any text with a config or with problems, never throw, and what it accepts must survive
// being written out and read again unchanged.

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { fingerprint } from "../../src/config/fingerprint.ts";
import {
  type ConfigResult,
  formatEndpoint,
  parseConfigText,
  validateConfig,
} from "../../src/config/parse.ts";
import type { Config } from "../../src/config/types.ts";
import { fuzzParams, fuzzTimeoutMs, mutate, mutations, text } from "./fuzz.ts";

// ---- Rendering documents as YAML -------------------------------------------------------

/**
 * flow renders a JSON value as YAML flow text: JSON is YAML, once every character outside
 * printable ASCII is an escape (YAML's \u and \U), so the text is plain ASCII.
 */
function flow(value: unknown): string {
  return JSON.stringify(value).replace(/[^\x20-\x7e]/gu, (c) => {
    const code = c.codePointAt(0)!;
    return code > 0xffff
      ? `\\U${code.toString(16).padStart(8, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** renderYaml writes a document in block style, as people write cluster files. */
function renderYaml(document: unknown, indent = ""): string {
  if (!isMapping(document) || Object.keys(document).length === 0) return `${flow(document)}\n`;
  let out = "";
  for (const [key, value] of Object.entries(document)) {
    if (isMapping(value) && Object.keys(value).length > 0) {
      out += `${indent}${flow(key)}:\n${renderYaml(value, `${indent}  `)}`;
    } else if (Array.isArray(value) && value.length > 0) {
      out += `${indent}${flow(key)}:\n`;
      for (const item of value) out += `${indent}  - ${flow(item)}\n`;
    } else {
      out += `${indent}${flow(key)}: ${flow(value)}\n`;
    }
  }
  return out;
}

/** configDocument is the cluster file of a Config, in the file's snake_case. */
function configDocument(config: Config): Record<string, unknown> {
  const ms = (value: number) => `${value}ms`;
  return {
    cluster_name: config.clusterName,
    members: config.members.map((member) =>
      member.peer === undefined || member.http === undefined ? { name: member.name } : {
        name: member.name,
        peer: formatEndpoint(member.peer),
        http: formatEndpoint(member.http),
      }
    ),
    storage: { dir: config.storage.dir },
    raft: {
      tick: ms(config.raft.tickMs),
      heartbeat_interval: ms(config.raft.heartbeatIntervalMs),
      election_timeout: ms(config.raft.electionTimeoutMs),
      snapshot_entries: config.raft.snapshotEntries,
    },
    resolver: { refresh: ms(config.resolver.refreshMs), servers: config.resolver.servers },
    ...(config.gossip === undefined ? {} : {
      gossip: {
        neighbours: config.gossip.neighbours.map(formatEndpoint),
        port: config.gossip.port,
        interval: ms(config.gossip.intervalMs),
        full_interval: ms(config.gossip.fullIntervalMs),
        expiry: ms(config.gossip.expiryMs),
      },
    }),
    http: {
      body_bytes_max: config.http.bodyBytesMax,
      request_timeout: ms(config.http.requestTimeoutMs),
    },
    security: {
      secret_file: config.security.secretFile ?? null,
      admin_token: config.security.adminToken ?? null,
    },
    log: { level: config.log.level, format: config.log.format },
  };
}

// ---- Arbitraries -----------------------------------------------------------------------

const junk = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 65536, "", "yes", "~", [], {}),
  text(12),
  fc.jsonValue({ maxDepth: 2 }),
);

/** sometimesJunk is usually a plausible value, sometimes anything at all. */
function sometimesJunk<T>(plausible: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof({ weight: 5, arbitrary: plausible }, { weight: 1, arbitrary: junk });
}

const duration = fc.oneof(
  fc.constantFrom("10ms", "100ms", "1s", "5s", "15s", "1m", "250us", "0", "1.5s", "1h1m", "10"),
  fc.integer({ min: 0, max: 100_000 }).map((value) => `${value}ms`),
);

const host = fc.oneof(
  fc.constantFrom(
    "127.0.0.11",
    "127.0.0.12",
    "localhost",
    "Node-A.Example.",
    "[::1]",
    "[FE80::1%Eth0]",
    "::1",
    "1.2.3",
    "-x",
  ),
  fc.ipV4(),
  fc.domain(),
  fc.ipV6().map((address) => `[${address}]`),
);
const endpointText = fc.tuple(
  host,
  fc.oneof(fc.constantFrom(7070, 7080, 7071), fc.integer({ min: 0, max: 70_000 })),
)
  .map(([h, port]) => `${h}:${port}`);

const memberName = fc.oneof(
  fc.constantFrom("node-a", "node-b", "node-c"),
  fc.stringMatching(/^[A-Za-z0-9._-]{1,8}$/),
);

const member = fc.record({
  name: sometimesJunk(memberName),
  peer: sometimesJunk(endpointText),
  http: sometimesJunk(endpointText),
}, { requiredKeys: ["name"] });

function section<T>(fields: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<unknown> {
  return sometimesJunk(fc.record(fields, { requiredKeys: [] }));
}

/** configDocumentArb is a cluster file's value: mostly plausible settings, some junk. */
const configDocumentArb = fc.record({
  cluster_name: sometimesJunk(fc.stringMatching(/^[a-z0-9-]{1,12}$/)),
  members: sometimesJunk(fc.array(sometimesJunk(member), { minLength: 1, maxLength: 10 })),
  storage: section({ dir: sometimesJunk(text(12, 1)) }),
  raft: section({
    tick: sometimesJunk(duration),
    heartbeat_interval: sometimesJunk(duration),
    election_timeout: sometimesJunk(duration),
    snapshot_entries: sometimesJunk(fc.integer({ min: 0, max: 200_000_000 })),
  }),
  resolver: section({
    refresh: sometimesJunk(duration),
    servers: sometimesJunk(fc.array(sometimesJunk(endpointText), { maxLength: 9 })),
  }),
  gossip: section({
    neighbours: sometimesJunk(fc.array(sometimesJunk(endpointText), { maxLength: 17 })),
    port: sometimesJunk(fc.integer({ min: 0, max: 70_000 })),
    interval: sometimesJunk(duration),
    full_interval: sometimesJunk(duration),
    expiry: sometimesJunk(duration),
  }),
  http: section({
    body_bytes_max: sometimesJunk(
      fc.oneof(fc.constantFrom("1MiB", "64MiB", "65MiB", "1.5KiB", "10 kB", "0"), fc.nat()),
    ),
    request_timeout: sometimesJunk(duration),
  }),
  security: section({
    secret_file: sometimesJunk(text(12, 1)),
    admin_token: sometimesJunk(text(12, 1)),
    // A path that cannot exist: the reader's error path, without reading real files.
    admin_token_file: fc.constant("/nonexistent/keel-fuzz/admin-token"),
  }),
  log: section({
    level: sometimesJunk(fc.constantFrom("debug", "info", "warn", "error", "INFO")),
    format: sometimesJunk(fc.constantFrom("json", "text")),
  }),
  // Unknown and misspelt keys.
  clustr_name: junk,
  "": junk,
}, { requiredKeys: [] });

/** timings are raft sections that fit together (whole ticks, 5 heartbeats per election). */
const timings = fc.constantFrom(
  {},
  { tick: "10ms", heartbeat_interval: "100ms", election_timeout: "1s" },
  { tick: "1ms", heartbeat_interval: "1ms", election_timeout: "5ms", snapshot_entries: 10 },
  { tick: "5ms", heartbeat_interval: "50ms", election_timeout: "250ms" },
  { heartbeat_interval: "20ms", election_timeout: "2s", snapshot_entries: 100_000_000 },
);

const ipEndpoint = fc.tuple(
  fc.oneof(fc.ipV4(), fc.ipV6().map((address) => `[${address}]`)),
  fc.integer({ min: 1, max: 65535 }),
).map(([h, port]) => `${h}:${port}`);

/** validDocumentArb is mostly valid: the cases that reach the end of validation. */
const validDocumentArb = fc.record({
  cluster_name: fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  members: fc.uniqueArray(
    fc.record({
      name: memberName,
      where: fc.option(fc.tuple(host, fc.integer({ min: 1, max: 65535 })), { nil: undefined }),
    }),
    { minLength: 1, maxLength: 5, selector: (m) => m.name },
  ).map((list) =>
    list.map(({ name, where }, i) =>
      where === undefined ? { name } : {
        name,
        peer: `${where[0]}:${where[1]}`,
        http: `${where[0]}:${(where[1] + i) % 65535 + 1}`,
      }
    )
  ),
  raft: timings,
  resolver: fc.record({ refresh: duration, servers: fc.array(ipEndpoint, { maxLength: 3 }) }, {
    requiredKeys: [],
  }),
  gossip: fc.record({
    neighbours: fc.array(endpointText, { minLength: 1, maxLength: 3 }),
    port: fc.integer({ min: 1, max: 65535 }),
    interval: fc.constantFrom("100ms", "1s"),
    full_interval: fc.constantFrom("1s", "5s"),
    expiry: fc.constantFrom("15s", "1m"),
  }, { requiredKeys: ["neighbours"] }),
  http: fc.record({
    body_bytes_max: fc.oneof(
      fc.constantFrom("1MiB", "64MiB", "1.5KiB", "10 kB"),
      fc.integer({ min: 1, max: 1 << 26 }),
    ),
    request_timeout: fc.constantFrom("1s", "5s", "1h"),
  }, { requiredKeys: [] }),
  security: fc.record({ secret_file: text(12, 1), admin_token: text(12, 1) }, { requiredKeys: [] }),
  log: fc.record({
    level: fc.constantFrom("debug", "info", "warn", "error"),
    format: fc.constantFrom("json", "text"),
  }, { requiredKeys: [] }),
}, { requiredKeys: ["cluster_name", "members", "gossip"] });

/** Paths to settings that perturbed() may overwrite with junk or remove. */
const settingPaths: readonly (readonly (string | number)[])[] = [
  ["cluster_name"],
  ["members"],
  ["members", 0],
  ["members", 0, "name"],
  ["members", 0, "peer"],
  ["members", 1, "http"],
  ["raft"],
  ["raft", "tick"],
  ["raft", "election_timeout"],
  ["resolver", "servers"],
  ["gossip"],
  ["gossip", "neighbours"],
  ["gossip", "expiry"],
  ["http", "body_bytes_max"],
  ["security", "admin_token"],
  ["log", "level"],
  ["unknown"],
];

/** perturbed is a mostly valid document with one or two settings broken or removed. */
const perturbedDocumentArb = fc.tuple(
  validDocumentArb,
  fc.array(
    fc.record({ path: fc.constantFrom(...settingPaths), value: junk, remove: fc.boolean() }),
    {
      minLength: 1,
      maxLength: 2,
    },
  ),
).map(([document, edits]) => {
  const copy = structuredClone(document) as Record<string, unknown>;
  for (const { path, value, remove } of edits) {
    let parent: unknown = copy;
    for (const step of path.slice(0, -1)) {
      parent = isMapping(parent) || Array.isArray(parent)
        ? (parent as Record<string | number, unknown>)[step]
        : undefined;
    }
    const last = path[path.length - 1]!;
    if (!isMapping(parent) && !Array.isArray(parent)) continue;
    const target = parent as Record<string | number, unknown>;
    if (!remove) target[last] = value;
    else if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete target[last];
  }
  return copy;
});

/** yamlish is text built from YAML's syntax, to reach the parser's corners. */
const yamlish = fc.array(
  fc.oneof(
    fc.constantFrom(
      "\n",
      "  ",
      ": ",
      "- ",
      "? ",
      "{",
      "}",
      "[",
      "]",
      ",",
      "&a ",
      "*a",
      "!!str ",
      "!!binary ",
      "---\n",
      "...\n",
      "'",
      '"',
      "# c",
      "|\n",
      ">-\n",
      "%YAML 1.2\n",
      "<<: ",
      "\t",
      "\\u0000",
      "cluster_name",
      "members",
      "name: node-a",
      "peer: 127.0.0.1:7070",
      "raft",
      "tick: 10ms",
    ),
    text(6),
  ),
  { maxLength: 40 },
).map((parts) => parts.join(""));

const validText = `cluster_name: fuzz
members:
  - name: node-a
    peer: 127.0.0.11:7070
    http: 127.0.0.11:7080
  - name: node-b
  - name: node-c
gossip:
  neighbours: ["127.0.0.11:7071"]
raft:
  tick: 10ms
  heartbeat_interval: 100ms
  election_timeout: 1s
`;
const utf8 = new TextEncoder();
const lenientUtf8 = new TextDecoder();

/** checkResult checks the contract of every answer: a config, or problems, never both. */
function checkResult(result: ConfigResult): void {
  expect(result.config === undefined).toBe(result.problems.length > 0);
  for (const problem of [...result.problems, ...result.warnings]) {
    expect(typeof problem.path).toBe("string");
    expect(problem.message.length).toBeGreaterThan(0);
  }
  if (result.config !== undefined) checkRevalidates(result.config);
}

/** checkRevalidates writes an accepted config out as a file and reads it back unchanged. */
function checkRevalidates(config: Config): void {
  const again = parseConfigText(renderYaml(configDocument(config)), "again.yaml");
  expect(again.problems).toEqual([]);
  expect(again.config).toEqual(config);
  expect(fingerprint(again.config!)).toBe(fingerprint(config));
}

// ---- Properties ------------------------------------------------------------------------

describe("cluster file parsing under fuzzing", () => {
  test("arbitrary text never throws and yields a config or problems", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          text(200),
          yamlish,
          mutations.map((edits) => lenientUtf8.decode(mutate(utf8.encode(validText), edits))),
        ),
        (input) => checkResult(parseConfigText(input, "fuzz.yaml")),
      ),
      fuzzParams(800),
    );
  }, fuzzTimeoutMs);

  test(
    "documents written as YAML read as the document itself, and accepted configs re-validate",
    () => {
      let accepted = 0;
      fc.assert(
        fc.property(
          fc.oneof(validDocumentArb, perturbedDocumentArb, configDocumentArb),
          (document) => {
            const result = parseConfigText(renderYaml(document), "fuzz.yaml");
            checkResult(result);
            const { source: _source, ...fromText } = result;
            expect(fromText).toEqual(validateConfig(document));
            if (result.config !== undefined) accepted++;
          },
        ),
        fuzzParams(600),
      );
      // The generator must reach valid configs often enough for the re-validation to count.
      expect(accepted).toBeGreaterThan(0);
    },
    fuzzTimeoutMs,
  );

  test("aliases that expand exponentially are refused quickly", () => {
    let text = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
    for (let i = 1; i < 10; i++) {
      text += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(",")}]\n`;
    }
    text += "cluster_name: x\nmembers: *a9\n";
    const started = performance.now();
    const result = parseConfigText(text, "laughs.yaml");
    expect(result.config).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(5000);
  });
});
