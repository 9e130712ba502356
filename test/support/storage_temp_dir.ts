import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** TempDirs hands out fresh directories under os.tmpdir() and removes them all at once. */
export class TempDirs {
  readonly #dirs: string[] = [];

  make(prefix = "keel-storage-"): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.#dirs.push(dir);
    return dir;
  }

  removeAll(): void {
    for (const dir of this.#dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}
