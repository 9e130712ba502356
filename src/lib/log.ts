/** Level orders log records; records below the logger's level are dropped. */
export type Level = "debug" | "info" | "warn" | "error";

const levelRank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

/** Logger writes one structured record per event. */
export interface Logger {
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
  /** child returns a logger that adds `fields` to every record. */
  child(fields: Fields): Logger;
}

export interface LoggerOptions {
  level: Level;
  format: "json" | "text";
  /** Where lines go; stderr by default. */
  write?: (line: string) => void;
  now?: () => Date;
}

/** createLogger writes JSON lines (for machines) or `time level message k=v` (for people). */
export function createLogger(options: LoggerOptions, base: Fields = {}): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  const now = options.now ?? (() => new Date());
  const threshold = levelRank[options.level];
  const emit = (level: Level, message: string, fields: Fields = {}): void => {
    if (levelRank[level] < threshold) return;
    const record = { time: now().toISOString(), level, msg: message, ...base, ...fields };
    if (options.format === "json") {
      write(JSON.stringify(record, jsonReplacer));
      return;
    }
    // A field left undefined is absent, as in the JSON form (not "key=undefined").
    const extra = Object.entries({ ...base, ...fields })
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) =>
        `${key}=${typeof value === "string" ? value : JSON.stringify(value, jsonReplacer)}`
      )
      .join(" ");
    write(`${record.time} ${level.toUpperCase().padEnd(5)} ${message}${extra ? " " + extra : ""}`);
  };
  return {
    debug: (message, fields) => emit("debug", message, fields),
    info: (message, fields) => emit("info", message, fields),
    warn: (message, fields) => emit("warn", message, fields),
    error: (message, fields) => emit("error", message, fields),
    child: (fields) => createLogger(options, { ...base, ...fields }),
  };
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (typeof value === "bigint") return value.toString();
  return value;
}

/** silentLogger drops everything (tests). */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};
