// Storages that a test file opens in fresh temp dirs: after each test, every one still open
// is closed and the dirs are removed. Call openedStorages() once, at the file's top level.

import { afterEach } from "bun:test";
import { SqliteStorage } from "../../src/storage/sqlite_storage.ts";
import { TempDirs } from "./storage_temp_dir.ts";

export interface OpenedStorages {
  dirs: TempDirs;
  /** open opens the dir's storage, to be closed after the test unless close() closed it. */
  open(dir: string): SqliteStorage;
  /** close closes a storage now (so the files can be changed, or the dir opened again). */
  close(storage: SqliteStorage): void;
}

export function openedStorages(): OpenedStorages {
  const dirs = new TempDirs();
  const opened: SqliteStorage[] = [];
  afterEach(() => {
    for (const storage of opened.splice(0)) storage.close();
    dirs.removeAll();
  });
  return {
    dirs,
    open(dir: string): SqliteStorage {
      const storage = SqliteStorage.open(dir);
      opened.push(storage);
      return storage;
    },
    close(storage: SqliteStorage): void {
      storage.close();
      const at = opened.indexOf(storage);
      if (at >= 0) opened.splice(at, 1);
    },
  };
}
