// The per-peer bounded outbound queue (outbound.ts fills it from send(), drains it into
// batch frames).

import { assert } from "../lib/assert.ts";
import type { Message } from "../consensus/types.ts";

/** MessageQueue is a bounded FIFO ring of messages with their encoded-size bounds. */
export class MessageQueue {
  readonly #messages: Array<Message | undefined>;
  readonly #bytes: number[];
  readonly #bytesMax: number;
  #head = 0;
  #length = 0;
  #totalBytes = 0;

  constructor(messagesMax: number, bytesMax: number) {
    this.#messages = new Array<Message | undefined>(messagesMax).fill(undefined);
    this.#bytes = new Array<number>(messagesMax).fill(0);
    this.#bytesMax = bytesMax;
  }

  get length(): number {
    return this.#length;
  }

  /** push appends unless that would exceed a bound; false means dropped. */
  push(message: Message, bytes: number): boolean {
    const capacity = this.#messages.length;
    if (this.#length === capacity || this.#totalBytes + bytes > this.#bytesMax) return false;
    const slot = (this.#head + this.#length) % capacity;
    this.#messages[slot] = message;
    this.#bytes[slot] = bytes;
    this.#length++;
    this.#totalBytes += bytes;
    return true;
  }

  peekBytes(): number {
    assert(this.#length > 0, "peek on an empty queue");
    return this.#bytes[this.#head]!;
  }

  shift(): Message {
    const message = this.#messages[this.#head];
    assert(this.#length > 0 && message !== undefined, "shift on an empty queue");
    this.#messages[this.#head] = undefined;
    this.#totalBytes -= this.#bytes[this.#head]!;
    this.#head = (this.#head + 1) % this.#messages.length;
    this.#length--;
    return message;
  }
}
