// Start a local cluster of the compiled binary, one process per member of a config file,
// each with its own data dir under data/. Prints the URLs to try; Ctrl-C stops them all.
//
//   bun scripts/cluster.ts --config examples/local-3.yaml [--binary dist/keel] [--data data]

import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { formatProblems, loadConfig } from "../src/config/parse.ts";

const { values } = parseArgs({
  options: {
    config: { type: "string", default: "examples/local-3.yaml" },
    binary: { type: "string", default: "dist/keel" },
    data: { type: "string", default: "data" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log("Usage: bun scripts/cluster.ts [--config FILE] [--binary dist/keel] [--data DIR]");
  process.exit(0);
}

const configPath = values.config!;
const loaded = loadConfig(configPath);
if (loaded.config === undefined) {
  console.error(formatProblems(loaded.problems, configPath));
  process.exit(2);
}
const config = loaded.config;
if (config.members.some((m) => m.http === undefined)) {
  console.error(
    `${configPath}: scripts/cluster.ts needs every member's peer and http endpoint; ` +
      "members found by gossip are started with keel run --peer-listen/--http-listen",
  );
  process.exit(2);
}
const binary = resolve(values.binary!);
const colors = ["\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m"];
const reset = "\x1b[0m";

const children = config.members.map((member, i) => {
  const dataDir = join(values.data!, member.name);
  const child = Bun.spawn(
    [
      binary,
      "run",
      "--config",
      configPath,
      "--name",
      member.name,
      "--data-dir",
      dataDir,
      "--log-format",
      "text",
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  const prefix = `${colors[i % colors.length]}${member.name.padEnd(8)}${reset}| `;
  void pipeLines(child.stdout, prefix);
  void pipeLines(child.stderr, prefix);
  return { member, child };
});

async function pipeLines(stream: ReadableStream<Uint8Array>, prefix: string): Promise<void> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) process.stdout.write(prefix + line + "\n");
  }
  if (buffered) process.stdout.write(prefix + buffered + "\n");
}

let stopping = false;
async function stopAll(code: number): Promise<never> {
  stopping = true;
  for (const { child } of children) child.kill("SIGTERM");
  await Promise.race([
    Promise.all(children.map(({ child }) => child.exited)),
    Bun.sleep(5000).then(() => children.forEach(({ child }) => child.kill("SIGKILL"))),
  ]);
  console.log("cluster stopped");
  process.exit(code);
}
process.on("SIGINT", () => void stopAll(0));
process.on("SIGTERM", () => void stopAll(0));
// A member that dies (kill -9 it to try a failover) leaves the others running; say how to
// start it again. The cluster stops only on Ctrl-C, or when every member is gone.
for (const entry of children) {
  const watch = (child: ReturnType<typeof Bun.spawn>): void => {
    void child.exited.then((code) => {
      if (stopping) return;
      const { member } = entry;
      console.error(
        `${member.name} exited (code ${code}). Start it again with:\n  ${binary} run --config ${configPath} --name ${member.name} --data-dir ${
          join(values.data!, member.name)
        }\nor press Ctrl-C to stop the cluster.`,
      );
      if (children.every(({ child }) => child.exitCode !== null || child.signalCode !== null)) {
        void stopAll(1);
      }
    });
  };
  watch(entry.child);
}

const urls = config.members.map((m) => `http://${m.http!.host}:${m.http!.port}`);
const deadline = Date.now() + 20_000;
let leader: string | null = null;
while (Date.now() < deadline && leader === null) {
  await Bun.sleep(200);
  try {
    const response = await fetch(`${urls[0]}/status`, { signal: AbortSignal.timeout(1000) });
    if (response.ok) leader = ((await response.json()) as { leader: string | null }).leader;
  } catch {
    // not up yet
  }
}
if (leader === null) {
  console.error("no leader elected within 20 s; see the logs above");
  await stopAll(1);
}
const [first, second] = urls;
console.log(`
keel cluster "${config.clusterName}" is up; leader: ${leader}
${
  config.members.map((m, i) => `  ${m.name.padEnd(8)} ${urls[i]}   (status: ${urls[i]}/status)`)
    .join("\n")
}

Try:
  curl -X PUT --data 'hello' ${first}/v1/kv/greeting
  curl ${second ?? first}/v1/kv/greeting
  curl ${second ?? first}/status

Ctrl-C stops the cluster (data stays in ${values.data}/; delete it for a fresh start).
`);
