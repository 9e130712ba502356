// A real `keel run` (the CLI's main, as the binary runs it) that breaks an invariant once
// it serves: an AssertionError thrown from a timer, an interval, an immediate or a promise
// callback. test/e2e/crash.test.ts expects the process to end with exit code 70.
//
//   bun test/support/crash_child.ts immediate|timer|interval|promise CONFIG NAME DATA_DIR URL

import { main } from "../../src/cli/main.ts";
import { AssertionError } from "../../src/lib/assert.ts";

const [where, config, name, dataDir, url] = process.argv.slice(2);
if (where === undefined || url === undefined) {
  console.error("usage: crash_child.ts WHERE CONFIG NAME DATA_DIR URL");
  process.exit(2);
}

function breakInvariant(): never {
  throw new AssertionError(`planted broken invariant (${where})`);
}

/** throwOnceServing waits for /healthz, then throws from the chosen kind of callback. */
async function throwOnceServing(): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const healthy = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (healthy) break;
    await Bun.sleep(50);
  }
  if (where === "immediate") setImmediate(breakInvariant);
  else if (where === "timer") setTimeout(breakInvariant, 10);
  else if (where === "interval") setInterval(breakInvariant, 10);
  else if (where === "promise") void Promise.resolve().then(breakInvariant);
  else throw new Error(`unknown place "${where}"`);
}

void throwOnceServing();
process.exit(
  await main(["run", "--config", config!, "--name", name!, "--data-dir", dataDir!]),
);
