// A broken invariant ends the process with exit code 70 wherever it is thrown (docs/deploy.md):
// from a timer, an interval, an immediate or a promise callback of a running `keel run`.
// Bun, left alone, prints such an error and carries on while the entry point awaits main()
// (issue 12, defect 1). Real processes: a one-member cluster on 127.0.0.145.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { collectLines } from "../support/cluster.ts";

const bun = process.execPath;
const child = resolve(import.meta.dir, "..", "support", "crash_child.ts");
const dir = mkdtempSync(join(tmpdir(), "keel-crash-"));
const url = "http://127.0.0.145:7080";
const config = join(dir, "one.yaml");
writeFileSync(
  config,
  [
    "cluster_name: crash",
    "members:",
    "  - name: solo",
    "    peer: 127.0.0.145:7070",
    "    http: 127.0.0.145:7080",
  ].join("\n") + "\n",
);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const places = {
  immediate: "an immediate",
  timer: "a timer",
  interval: "an interval",
  promise: "a promise",
};

for (const [where, what] of Object.entries(places)) {
  test(`an AssertionError thrown from ${what} callback exits 70`, async () => {
    const process = Bun.spawn(
      [bun, child, where, config, "solo", join(dir, `data-${where}`), url],
      { stdout: "ignore", stderr: "pipe" },
    );
    const log: string[] = [];
    void collectLines(process.stderr as ReadableStream<Uint8Array>, log);
    const code = await Promise.race([process.exited, Bun.sleep(20_000).then(() => null)]);
    if (code === null) process.kill("SIGKILL");
    expect({ code, log: code === 70 ? "" : log.slice(-10).join("\n") }).toEqual({
      code: 70,
      log: "",
    });
    await Bun.sleep(50);
    const text = log.join("\n");
    expect(text).toContain("internal error (a bug): exiting with 70");
    expect(text).toContain(`planted broken invariant (${where})`);
  }, 30_000);
}
