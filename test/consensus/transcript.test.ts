// Golden interaction transcripts in the etcd-raft datadriven style. Each file in
// testdata/ is a list of blocks: a command, a line "----", then the messages it caused
// and any state it printed. Regenerate with UPDATE=1 and read the diff before committing.

import { expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestCluster } from "./driver.ts";

const dir = join(import.meta.dir, "testdata");

interface Block {
  command: string;
  expected: string;
}

function parse(text: string): Block[] {
  const blocks: Block[] = [];
  for (const chunk of text.split(/\n\n+/)) {
    const lines = chunk.split("\n").filter((line) => !line.startsWith("#"));
    if (lines.join("").trim() === "") continue;
    const separator = lines.indexOf("----");
    if (separator !== 1) {
      throw new SyntaxError(`Expected one command line then "----" in block: ${chunk}`);
    }
    blocks.push({ command: lines[0]!, expected: lines.slice(2).join("\n").trim() });
  }
  return blocks;
}

function run(
  cluster: TestCluster | undefined,
  command: string,
): { cluster: TestCluster; output: string } {
  const [verb, ...args] = command.trim().split(/\s+/);
  if (verb === "cluster") {
    const names = args.filter((arg) => !arg.includes("="));
    const options = Object.fromEntries(
      args.filter((arg) => arg.includes("=")).map((arg) => {
        const [key, value] = arg.split("=");
        return [key!, value === "true" ? true : value === "false" ? false : Number(value)];
      }),
    );
    return { cluster: new TestCluster(names, options), output: "ok" };
  }
  if (cluster === undefined) throw new Error(`"${command}" before "cluster"`);
  cluster.log = [];
  let extra = "";
  const name = args[0] ?? "";
  switch (verb) {
    case "elect":
      cluster.elect(name);
      break;
    case "propose": {
      const result = cluster.propose(name, args[1] ?? "x");
      extra = result.ok
        ? `proposed index=${result.index} term=${result.term}`
        : `refused ${result.reason}`;
      cluster.deliver();
      break;
    }
    case "deliver":
      cluster.deliver();
      break;
    case "tick":
      cluster.tick(name, Number(args[1] ?? 1));
      cluster.deliver();
      break;
    case "tickall":
      cluster.tickAll(Number(args[0] ?? 1));
      break;
    case "isolate":
      cluster.isolate(name);
      break;
    case "heal":
      cluster.heal();
      break;
    case "transfer":
      extra = JSON.stringify(cluster.raft(name).transferLeadership(args[1] ?? ""));
      cluster.deliver();
      break;
    case "read":
      cluster.raft(name).readIndex(Number(args[1]));
      cluster.deliver();
      extra = `readStates ${JSON.stringify(cluster.node(name).readStates)}`;
      break;
    case "snapshot":
      cluster.node(name).takeSnapshot(Number(args[1] ?? 0));
      extra = `snapshot at ${cluster.node(name).disk.snapshot?.meta.index}`;
      break;
    case "restart":
      cluster.node(name).restart(99);
      break;
    case "status":
      break;
    default:
      throw new Error(`Unknown transcript command "${verb}"`);
  }
  const status = [...cluster.nodes.values()].map((node) => {
    const r = node.raft;
    return `${node.id}: ${r.role} term=${r.term} leader=${
      r.leader ?? "-"
    } commit=${r.commitIndex} last=${r.lastIndex} state=[${node.state.join(",")}]`;
  });
  const output = [...cluster.log, ...(extra ? [extra] : []), ...(verb === "status" ? status : [])];
  return { cluster, output: output.join("\n") || "(nothing)" };
}

for (const file of readdirSync(dir).filter((f) => f.endsWith(".txt")).sort()) {
  test(`transcript ${file}`, () => {
    const path = join(dir, file);
    const blocks = parse(readFileSync(path, "utf8"));
    let cluster: TestCluster | undefined;
    const rendered: string[] = [];
    for (const block of blocks) {
      const result = run(cluster, block.command);
      cluster = result.cluster;
      rendered.push(`${block.command}\n----\n${result.output}`);
      if (!process.env.UPDATE) {
        expect(`${block.command}\n${result.output}`).toBe(`${block.command}\n${block.expected}`);
      }
    }
    if (process.env.UPDATE) {
      const header = readFileSync(path, "utf8").split("\n").filter((line) => line.startsWith("#"))
        .join("\n");
      writeFileSync(path, `${header ? header + "\n\n" : ""}${rendered.join("\n\n")}\n`);
    }
  });
}
