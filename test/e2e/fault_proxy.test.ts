// FaultProxy (test/support/fault_proxy.ts), the link proxy behind the chaos runner's
// partitions: it forwards bytes both ways, drops them while cut, and forwards again healed.

import { afterAll, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { FaultProxy } from "../support/fault_proxy.ts";

const port = 7370;
const echo: TCPSocketListener = Bun.listen({
  hostname: "127.0.0.248",
  port,
  socket: { data: (socket, data) => void socket.write(data) },
});
const proxy = FaultProxy.start("127.0.0.249", "127.0.0.248", [port]);

afterAll(() => {
  proxy.stop();
  echo.stop(true);
});

/** roundTrip sends text through the proxy and resolves with what came back within waitMs. */
async function roundTrip(text: string, waitMs = 500): Promise<string> {
  let received = "";
  const socket = await Bun.connect({
    hostname: "127.0.0.249",
    port,
    socket: { data: (_, data) => void (received += new TextDecoder().decode(data)) },
  });
  socket.write(text);
  const deadline = performance.now() + waitMs;
  while (received.length < text.length && performance.now() < deadline) await Bun.sleep(10);
  socket.end();
  return received;
}

test("a fault proxy forwards, blackholes while cut, and forwards again when healed", async () => {
  expect(await roundTrip("hello")).toBe("hello");
  proxy.cut();
  expect(proxy.isCut).toBe(true);
  expect(await roundTrip("dropped", 300)).toBe("");
  proxy.heal();
  expect(await roundTrip("again")).toBe("again");
});
