import { describe, expect, test } from "bun:test";
import { admit, normalizeHost } from "../../src/transport/admission.ts";
import { inboundPendingMax, inboundPendingPerHostMax } from "../../src/transport/limits.ts";

describe("admit", () => {
  test("a stranger is refused once its address or all strangers hold their maximum", () => {
    expect(admit(false, { fromHost: 0, strangers: 0 })).toEqual({ ok: true });
    expect(admit(false, { fromHost: inboundPendingPerHostMax, strangers: 1 })).toMatchObject({
      ok: false,
      bound: "per-host",
    });
    expect(admit(false, { fromHost: 0, strangers: inboundPendingMax })).toMatchObject({
      ok: false,
      bound: "strangers",
    });
  });

  test("a member's address is not crowded out by strangers, but is bounded itself", () => {
    expect(admit(true, { fromHost: 0, strangers: inboundPendingMax })).toEqual({ ok: true });
    expect(admit(true, { fromHost: inboundPendingPerHostMax, strangers: 0 })).toMatchObject({
      ok: false,
      bound: "per-host",
    });
  });
});

test("normalizeHost compares an IPv4-mapped source with its IPv4 address", () => {
  expect(normalizeHost("::ffff:10.0.0.7")).toBe("10.0.0.7");
  expect(normalizeHost("FE80::1")).toBe("fe80::1");
  expect(normalizeHost("10.0.0.7")).toBe("10.0.0.7");
});
