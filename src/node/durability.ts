// Durability: which writes to storage are on disk, and the messages that wait for them.
//
// Each Ready's hard state and entries are written in one transaction (storage.write) but
// not synced; a background fdatasync (storage.sync), one at a time, covers every write
// made before it began (group commit). When it ends, the core hears which entries are
// durable (Raft.persisted) and the messages that promised those writes go out, in order.
// Persist before send, always: a message that promises a vote, a term or entries leaves
// only once they are durable (Raft's rule; etcd's Ready contract).

import type { Entry, Message } from "../consensus/types.ts";
import type { Histogram } from "../lib/metrics.ts";
import type { Logger } from "../lib/log.ts";

/** Messages held for a sync at most; past it (a disk that stopped answering) they drop. */
export const heldMessagesMax = 16_384;

/** DurabilityDeps are the node's parts durability uses. */
export interface DurabilityDeps {
  sync(): Promise<void>;
  /** The log through (index, term) is durable: tell the core (Raft.persisted). */
  persisted(index: number, term: number): void;
  send(message: Message): void;
  /** A sync ended and what waited went out: run the loop again. */
  synced(): void;
  /** A sync failed: never retry and trust the data; the node halts (storageFailed). */
  syncFailed(error: unknown): void;
  stopped(): boolean;
  halted(): boolean;
  fsyncSeconds: Histogram;
  log: Logger;
}

/** Durability counts writes handed to storage and how many of them are durable. */
export class Durability {
  readonly #deps: DurabilityDeps;
  #written = 0;
  #durable = 0;
  #syncing = false;
  /** The last entry written: what the core hears once the write is durable. */
  #lastWritten: { index: number; term: number } | undefined = undefined;
  /**
   * Messages that promise a write not yet durable: sent once it is (in order). Bounded:
   * past heldMessagesMax new ones are dropped, which Raft tolerates as it does a lossy
   * network.
   */
  #held: { write: number; message: Message }[] = [];
  #heldDropped = 0;

  constructor(deps: DurabilityDeps) {
    this.#deps = deps;
  }

  /** wrote: a write of these entries was handed to storage, durable once a sync ends. */
  wrote(entries: Entry[]): void {
    this.#written++;
    this.#noteWritten(entries);
  }

  /** wroteDurably: a write that storage made durable before returning (status, install). */
  wroteDurably(entries: Entry[]): void {
    this.wrote(entries);
    this.allDurable();
  }

  /** allDurable: every write so far is durable (an install synced everything before it). */
  allDurable(): void {
    this.#onDurable(this.#written, this.#lastWritten);
  }

  /** sendWhenDurable sends now if every write so far is durable, else when it is. */
  sendWhenDurable(message: Message): void {
    if (this.#durable >= this.#written) {
      this.#deps.send(message);
      return;
    }
    if (this.#held.length < heldMessagesMax) this.#held.push({ write: this.#written, message });
    else this.#heldDropped++;
  }

  /** dropHeld forgets every held message: after a failed write none may go out. */
  dropHeld(): void {
    this.#held = [];
  }

  /**
   * startSync makes the writes so far durable in the background: one fdatasync at a time,
   * each covering every write made before it began (group commit). Writes made while it
   * runs wait for the next one.
   */
  startSync(): void {
    if (this.#syncing || this.#durable >= this.#written || this.#deps.stopped()) return;
    this.#syncing = true;
    const target = this.#written;
    const covers = this.#lastWritten;
    const started = performance.now();
    this.#deps.sync().then(() => {
      this.#syncing = false;
      this.#deps.fsyncSeconds.observe((performance.now() - started) / 1000);
      if (this.#deps.stopped() || this.#deps.halted()) return;
      this.#onDurable(target, covers);
      this.startSync();
      this.#deps.synced();
    }, (error: unknown) => {
      this.#syncing = false;
      if (this.#deps.stopped() || this.#deps.halted()) return;
      this.#deps.syncFailed(error);
    });
  }

  /**
   * onDurable: writes up to `write` are on disk, the log through `covers` with them; tell
   * the core and send what waited. (A later write that overwrote `covers` makes the core
   * ignore it: the term no longer matches.)
   */
  #onDurable(write: number, covers: { index: number; term: number } | undefined): void {
    if (write <= this.#durable) return;
    this.#durable = write;
    if (covers !== undefined) this.#deps.persisted(covers.index, covers.term);
    if (this.#heldDropped > 0) {
      this.#deps.log.warn("messages waiting for a slow disk were dropped", {
        dropped: this.#heldDropped,
      });
      this.#heldDropped = 0;
    }
    let sent = 0;
    while (sent < this.#held.length && this.#held[sent]!.write <= write) {
      this.#deps.send(this.#held[sent++]!.message);
    }
    if (sent > 0) this.#held.splice(0, sent);
  }

  /** noteWritten remembers the last entry written, reported to the core once durable. */
  #noteWritten(entries: Entry[]): void {
    const last = entries[entries.length - 1];
    if (last === undefined) return;
    this.#lastWritten = { index: last.index, term: last.term };
  }
}
