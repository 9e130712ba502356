// Snapshot files: a data dir keeps its snapshots' bytes in `<dir>/snapshots/`, one file per
// snapshot, named `<index>-<term>-<generation>.snap`.
//
// A file counts only while the database's snapshot row names it (index, term and
// generation): the row's commit is what makes a new snapshot current, so a file is always
// complete and durable before a row names it, and no file a row names is ever written
// again. Any other snapshot file is left over from a crash, a staging the process did not
// finish, or a removal that failed, and is deleted when the storage opens.

import {
  close,
  closeSync,
  fdatasync,
  fdatasyncSync,
  fsyncSync,
  mkdirSync,
  open,
  openSync,
  readdirSync,
  readSync,
  statSync,
  unlinkSync,
  write,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import type { SnapshotMeta } from "../consensus/types.ts";

/** snapshotsDirName is the snapshot files' directory inside the data dir. */
export const snapshotsDirName = "snapshots";

/** snapshotFileNamePattern matches every name snapshotFileName makes, and nothing else. */
const snapshotFileNamePattern = /^[0-9]+-[0-9]+-[0-9]+\.snap$/;

/**
 * snapshotFileName is `<index>-<term>-<generation>.snap`. The generation is new for every
 * file the storage writes, so a snapshot saved again at the same index and term goes to a
 * new file instead of overwriting the one the database still names.
 */
export function snapshotFileName(meta: SnapshotMeta, generation: number): string {
  return `${meta.index}-${meta.term}-${generation}.snap`;
}

/**
 * ensureSnapshotsDir creates `<dataDir>/snapshots` if needed and returns its path. A new
 * directory's entry is synced into the data dir, so the files in it survive power loss.
 */
export function ensureSnapshotsDir(dataDir: string): string {
  const dir = join(dataDir, snapshotsDirName);
  if (mkdirSync(dir, { recursive: true }) !== undefined) fsyncDirectory(dataDir);
  return dir;
}

/**
 * removeOrphans deletes every snapshot file in `dir` except `keep` (a file name). Only the
 * names keel makes: a file an operator put here is not keel's to delete.
 */
export function removeOrphans(dir: string, keep: string | undefined): void {
  for (const name of readdirSync(dir)) {
    if (name !== keep && snapshotFileNamePattern.test(name)) removeQuietly(join(dir, name));
  }
}

/** directoryBytes is the total size of the files in `dir`. */
export function directoryBytes(dir: string): number {
  let bytes = 0;
  for (const name of readdirSync(dir)) {
    // A file may go between the listing and the stat (a snapshot being replaced).
    bytes += statSync(join(dir, name), { throwIfNoEntry: false })?.size ?? 0;
  }
  return bytes;
}

/** createFile creates (or truncates) a file for reading and writing and returns its fd. */
export function createFile(path: string): number {
  return openSync(path, "w+");
}

/** writeAt writes all of `data` at byte `position` of the file. */
export function writeAt(fd: number, path: string, data: Uint8Array, position: number): void {
  let done = 0;
  try {
    while (done < data.length) {
      done += writeSync(fd, data, done, data.length - done, position + done);
    }
  } catch (error: unknown) {
    throw new Error(
      `Cannot write bytes ${position + done} to ${position + data.length} of snapshot file ` +
        `"${path}": ${messageOf(error)}`,
      { cause: error },
    );
  }
}

/**
 * readUpTo reads `length` bytes from byte `position` of the file, or fewer if the file ends
 * before them (the caller says what a short file means). An I/O error throws.
 */
export function readUpTo(fd: number, path: string, length: number, position: number): Uint8Array {
  const data = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let read: number;
    try {
      read = readSync(fd, data, done, length - done, position + done);
    } catch (error: unknown) {
      throw new Error(
        `Cannot read byte ${position + done} of snapshot file "${path}": ${messageOf(error)}`,
        { cause: error },
      );
    }
    if (read === 0) return data.subarray(0, done);
    done += read;
  }
  return data;
}

/**
 * writeInBackground writes the parts one after another from byte 0, off the event loop
 * (the thread pool), and resolves when all of them are written.
 */
export async function writeInBackground(
  fd: number,
  path: string,
  parts: readonly Uint8Array[],
): Promise<void> {
  let position = 0;
  for (const part of parts) {
    let done = 0;
    while (done < part.length) {
      try {
        done += await new Promise<number>((resolve, reject) => {
          write(fd, part, done, part.length - done, position + done, (error, written) => {
            if (error !== null) reject(error);
            else resolve(written);
          });
        });
      } catch (error: unknown) {
        throw new Error(
          `Cannot write byte ${position + done} of snapshot file "${path}": ${messageOf(error)}`,
          { cause: error },
        );
      }
    }
    position += part.length;
  }
}

/** syncDataInBackground fdatasyncs the file off the event loop. */
export function syncDataInBackground(fd: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fdatasync(fd, (error) => {
      if (error === null) resolve();
      else {
        reject(
          new Error(`Cannot sync snapshot file "${path}": ${messageOf(error)}`, { cause: error }),
        );
      }
    });
  });
}

/** syncData makes the file's bytes durable (fdatasync). */
export function syncData(fd: number, path: string): void {
  try {
    fdatasyncSync(fd);
  } catch (error: unknown) {
    throw new Error(`Cannot sync snapshot file "${path}": ${messageOf(error)}`, { cause: error });
  }
}

/**
 * flushInBackground fdatasyncs the file off the event loop, on an fd of its own (the file
 * may be closed and removed meanwhile), and reports how that ended. On Linux a write error
 * is reported to every fd open on the file when it happened, so the caller's own later
 * fdatasync still sees one that this flush saw first.
 */
export function flushInBackground(path: string, done: (error: Error | null) => void): void {
  open(path, "r", (openError, fd) => {
    if (openError !== null) {
      done(openError);
      return;
    }
    fdatasync(fd, (syncError) => close(fd, () => done(syncError)));
  });
}

/** fsyncDirectory makes the directory's entries (files created, renamed) durable. */
export function fsyncDirectory(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * removeQuietly deletes a file that no longer counts, ignoring failure: nothing reads it
 * again, and the next open deletes it if it is still there.
 */
export function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Left for the next open's removeOrphans.
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
