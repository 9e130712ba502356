// FaultProxy: a TCP proxy for one directed link between two members (the chaos runner's
// partitions). It listens on its own loopback address and forwards every connection to
// the target; cut() terminates the link's connections and blackholes new ones (accepted,
// their bytes dropped, never forwarded) until heal(), which terminates the held ones so
// that the member dials again.

import type { Socket, TCPSocketListener } from "bun";

/** proxyBufferBytesMax bounds the bytes held for a slow side before the pair is dropped. */
const proxyBufferBytesMax = 16 * 1024 * 1024;

interface Side {
  peer: Socket<Side> | undefined;
  /** pending holds bytes for peer that arrived before it connected or while it was full. */
  pending: Uint8Array[];
  pendingBytes: number;
  held: boolean;
}

export class FaultProxy {
  #cut = false;
  readonly #sockets = new Set<Socket<Side>>();
  readonly #listeners: TCPSocketListener<Side>[] = [];

  private constructor(readonly hostname: string) {}

  /** start listens on hostname at each port and forwards it to target at the same port. */
  static start(hostname: string, target: string, ports: readonly number[]): FaultProxy {
    const proxy = new FaultProxy(hostname);
    for (const port of ports) proxy.#listen(port, target);
    return proxy;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  cut(): void {
    this.#cut = true;
    this.#terminateAll();
  }

  heal(): void {
    this.#cut = false;
    this.#terminateAll();
  }

  stop(): void {
    for (const listener of this.#listeners) listener.stop(true);
    this.#terminateAll();
  }

  #terminateAll(): void {
    for (const socket of [...this.#sockets]) socket.terminate();
    this.#sockets.clear();
  }

  #listen(port: number, target: string): void {
    const sockets = this.#sockets;
    const flush = (to: Socket<Side>, side: Side) => {
      while (side.pending.length > 0) {
        const chunk = side.pending[0]!;
        const written = to.write(chunk);
        side.pendingBytes -= written;
        if (written < chunk.length) {
          side.pending[0] = chunk.subarray(written);
          return;
        }
        side.pending.shift();
      }
    };
    const forward = (from: Socket<Side>, data: Uint8Array) => {
      const side = from.data;
      if (side.held) return; // Blackholed.
      const peer = side.peer;
      side.pending.push(new Uint8Array(data));
      side.pendingBytes += data.length;
      if (side.pendingBytes > proxyBufferBytesMax) {
        from.terminate();
        peer?.terminate();
        return;
      }
      if (peer !== undefined) flush(peer, side);
    };
    const close = (socket: Socket<Side>) => {
      sockets.delete(socket);
      socket.data.peer?.end();
    };
    const listener = Bun.listen<Side>({
      hostname: this.hostname,
      port,
      data: { peer: undefined, pending: [], pendingBytes: 0, held: false },
      socket: {
        open: (inbound) => {
          inbound.data = { peer: undefined, pending: [], pendingBytes: 0, held: this.#cut };
          sockets.add(inbound);
          if (this.#cut) return;
          void Bun.connect<Side>({
            hostname: target,
            port,
            data: { peer: inbound, pending: [], pendingBytes: 0, held: false },
            socket: {
              open: (outbound) => {
                sockets.add(outbound);
                inbound.data.peer = outbound;
                flush(outbound, inbound.data);
              },
              data: (outbound, data) => forward(outbound, data),
              drain: (outbound) => flush(outbound, inbound.data),
              close: (outbound) => close(outbound),
              error: (outbound) => close(outbound),
            },
          }).catch(() => inbound.terminate());
        },
        data: (inbound, data) => forward(inbound, data),
        drain: (inbound) => {
          const peer = inbound.data.peer;
          if (peer !== undefined) flush(inbound, peer.data);
        },
        close: (inbound) => close(inbound),
        error: (inbound) => close(inbound),
      },
    });
    this.#listeners.push(listener);
  }
}
