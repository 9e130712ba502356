// The structured logger: text for people, JSON lines for machines.

import { expect, test } from "bun:test";
import { createLogger } from "../../src/lib/log.ts";

const now = () => new Date("2026-12-08T00:00:00.000Z");

function lines(format: "json" | "text"): string[] {
  const out: string[] = [];
  const log = createLogger({ level: "info", format, write: (line) => out.push(line), now });
  log.info("fence committed", { member: "node-b", replaces: undefined, index: 7 });
  return out;
}

test("a field left undefined is absent in the text log, as in JSON (not replaces=undefined)", () => {
  expect(lines("text")).toEqual([
    "2026-12-08T00:00:00.000Z INFO  fence committed member=node-b index=7",
  ]);
  expect(JSON.parse(lines("json")[0]!)).toEqual({
    time: "2026-12-08T00:00:00.000Z",
    level: "info",
    msg: "fence committed",
    member: "node-b",
    index: 7,
  });
});
