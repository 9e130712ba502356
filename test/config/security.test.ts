// The security settings: client_token(_file) and tls in the config (parse.ts), the secret
// file and TLS files read at start (secret.ts), and what /status says of them.

import { afterAll, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { type ConfigResult, parseConfigText } from "../../src/config/parse.ts";
import {
  loadSecret,
  loadTls,
  readSecretFile,
  secretBytesMin,
  SecretError,
  secretFileBytesMax,
  secretOfFileBytes,
  securityStatus,
} from "../../src/config/secret.ts";
import type { Config } from "../../src/config/types.ts";

const dir = mkdtempSync(join(tmpdir(), "keel-security-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const members = `
cluster_name: test
members:
  - name: node-a
    peer: 127.0.0.11:7070
    http: 127.0.0.11:7080
`;

function parse(security: string): ConfigResult {
  return parseConfigText(`${members}security:\n${security}`, "test.yaml");
}

function file(name: string, text: string | Uint8Array, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function withSecurity(security: Partial<Config["security"]>): Config {
  const config = parse("  admin_token: x").config!;
  return { ...config, security: { secretFile: undefined, adminToken: undefined, ...security } };
}

describe("config: client token and tls", () => {
  test("client_token inline, or from a file", () => {
    expect(parse("  client_token: c-1").config?.security.clientToken).toBe("c-1");
    const path = file("client-token", "  c-2\n");
    expect(parse(`  client_token_file: ${path}`).config?.security.clientToken).toBe("c-2");
    expect(parse("  admin_token: a").config?.security.clientToken).toBeUndefined();
  });

  test("client_token and client_token_file together, or a bad file, are problems", () => {
    const path = file("client-token-2", "c-3");
    expect(parse(`  client_token: c\n  client_token_file: ${path}`).problems).toEqual([{
      path: "security.client_token_file",
      message: 'give only one of "client_token" and "client_token_file"',
    }]);
    expect(parse(`  client_token_file: ${join(dir, "missing")}`).problems[0]).toMatchObject({
      path: "security.client_token_file",
      message: expect.stringContaining("no such file"),
    });
    const open = file("client-token-open", "c-4", 0o644);
    expect(parse(`  client_token_file: ${open}`).warnings).toContainEqual({
      path: "security.client_token_file",
      message: expect.stringContaining("accessible to other users (mode 644)"),
    });
    expect(parse("  client_token: 12345").problems[0]?.message).toBe(
      "must be a string, got a number", // a token is never echoed
    );
  });

  test("tls needs cert_file and key_file that exist; ca_file is optional", () => {
    const cert = file("cert.pem", "-----BEGIN CERTIFICATE-----\n");
    const key = file("key.pem", "-----BEGIN PRIVATE KEY-----\n");
    expect(parse(`  tls:\n    cert_file: ${cert}\n    key_file: ${key}`).config?.security.tls)
      .toEqual({ certFile: cert, keyFile: key, caFile: undefined });
    expect(paths(parse(`  tls:\n    cert_file: ${cert}`))).toEqual(["security.tls.key_file"]);
    const missing = parse(
      `  tls:\n    cert_file: ${cert}\n    key_file: ${key}\n    ca_file: ${dir}/nope.pem`,
    );
    expect(missing.problems).toEqual([{
      path: "security.tls.ca_file",
      message: `cannot read "${dir}/nope.pem": no such file`,
    }]);
    expect(paths(parse(`  tls:\n    cert: ${cert}`))).toContain("security.tls.cert");
    expect(paths(parse(`  tls: yes`))).toEqual(["security.tls"]);
  });
});

function paths(result: ConfigResult): string[] {
  return result.problems.map((problem) => problem.path);
}

describe("loadSecret", () => {
  test("no secret_file is dev mode", () => {
    expect(loadSecret(withSecurity({}))).toBeUndefined();
  });

  test("reads the file, trimmed, and warns when others may read it", () => {
    const warnings: string[] = [];
    const path = file("secret-open", "a-text-secret-of-28-bytes-ok\n", 0o644);
    const secret = loadSecret(withSecurity({ secretFile: path }), {
      warn: (message) => warnings.push(message),
    });
    expect(new TextDecoder().decode(secret)).toBe("a-text-secret-of-28-bytes-ok");
    expect(warnings).toEqual([
      `security.secret_file "${path}" is accessible to other users (mode 644); chmod 600 it`,
    ]);
    const quiet: string[] = [];
    readSecretFile(file("secret-ok", "x".repeat(32)), { warn: (m) => quiet.push(m) });
    expect(quiet).toEqual([]);
  });

  test("a text secret is its text with surrounding whitespace trimmed, as it always was", () => {
    // The rule before binary secrets: readFileSync(path, "utf8").trim(), as UTF-8 bytes.
    for (
      const text of [
        "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
        "  spaced secret, 26 bytes  \r\n",
        "\ufeffbom-then-secret-text",
      ]
    ) {
      const path = file("secret-text", text);
      expect(readSecretFile(path)).toEqual(new TextEncoder().encode(text.trim()));
    }
  });

  test("binary secrets are read as bytes: two that differ in non-UTF-8 bytes differ", () => {
    // 48 random-looking bytes, and a copy with 20 bytes changed to other invalid UTF-8:
    // decoded as UTF-8 with replacement both became the same string, hence the same key.
    const a = new Uint8Array(48).map((_, index) => (index * 37 + 11) % 256);
    a[0] = 0xff;
    const b = a.slice();
    for (let index = 0; index < 20; index++) b[2 * index + 1] = 0xfe - (index % 2);
    for (let index = 0; index < 20; index++) a[2 * index + 1] = 0xff;
    expect(new TextDecoder().decode(a)).toBe(new TextDecoder().decode(b));
    const secretA = readSecretFile(file("secret-binary-a", a));
    const secretB = readSecretFile(file("secret-binary-b", b));
    expect(secretA).toEqual(a);
    expect(secretB).toEqual(b);
    const key = (secret: Uint8Array) =>
      createHmac("sha256", secret).update("keel-hello-v1").digest("hex");
    expect(key(secretA)).not.toBe(key(secretB));
    // Byte for byte: whitespace at the ends of a binary secret is part of it.
    const padded = new Uint8Array([0x20, ...a, 0x0a]);
    expect(readSecretFile(file("secret-binary-padded", padded))).toEqual(padded);
  });

  test("for any text the rule is the old one; any bytes that are not UTF-8 are kept as they are", () => {
    // The old rule: readFileSync(path, "utf8").trim(), encoded as UTF-8.
    const space = fc.constantFrom(
      "",
      " ",
      "\n",
      "\r\n",
      "\t\n",
      "\ufeff",
      "\u00a0",
      "\u2028",
      "\u3000 \n",
    );
    const oldRule = (bytes: Uint8Array) =>
      new TextEncoder().encode(Buffer.from(bytes).toString("utf8").trim());
    fc.assert(
      // Whitespace of every kind trim() knows around any text, BOM and CRLF included.
      fc.property(
        fc.tuple(space, fc.string({ unit: "grapheme", maxLength: 64 }), space),
        (parts) => {
          const text = parts.join("");
          const bytes = new TextEncoder().encode(text);
          expect(secretOfFileBytes(bytes)).toEqual(oldRule(bytes));
        },
      ),
      { numRuns: 500 },
    );
    const isUtf8 = (bytes: Uint8Array) => {
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes);
        return true;
      } catch {
        return false;
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (bytes) => {
        fc.pre(!isUtf8(bytes));
        expect(secretOfFileBytes(bytes)).toEqual(bytes);
      }),
      { numRuns: 500 },
    );
  });

  test(`a secret shorter than ${secretBytesMin} bytes is refused, naming the minimum`, () => {
    const path = file("secret-short", "short\n");
    expect(() => loadSecret(withSecurity({ secretFile: path }))).toThrow(SecretError);
    expect(() => loadSecret(withSecurity({ secretFile: path }))).toThrow(
      `security.secret_file "${path}" holds only 5 bytes, fewer than the minimum of ` +
        `${secretBytesMin}; use at least 32 random bytes (openssl rand -base64 32)`,
    );
    const binary = file("secret-short-binary", new Uint8Array([0xff, 0xfe, 1, 2, 3]));
    expect(() => readSecretFile(binary)).toThrow("holds only 5 bytes");
    expect(readSecretFile(file("secret-min", "m".repeat(secretBytesMin))).byteLength).toBe(
      secretBytesMin,
    );
  });

  test("missing, empty, too big and a directory are errors that name the file", () => {
    const cases: Array<[string, string]> = [
      [join(dir, "absent"), `Cannot read security.secret_file "${dir}/absent": no such file`],
      [file("empty", " \n"), `security.secret_file "${dir}/empty" is empty`],
      [
        file("big", "x".repeat(secretFileBytesMax + 1)),
        `security.secret_file "${dir}/big" is ${
          secretFileBytesMax + 1
        } bytes, more than the maximum of ${secretFileBytesMax}`,
      ],
    ];
    mkdirSync(join(dir, "a-dir"));
    cases.push([join(dir, "a-dir"), `security.secret_file "${dir}/a-dir" is not a regular file`]);
    for (const [path, message] of cases) {
      expect(() => loadSecret(withSecurity({ secretFile: path }))).toThrow(SecretError);
      expect(() => loadSecret(withSecurity({ secretFile: path }))).toThrow(message);
    }
  });

  test("secret_env reads the named variable, trimmed; unset, empty or short is an error", () => {
    const config = withSecurity({ secretEnv: "KEEL_TEST_SECRET" });
    const warnings: string[] = [];
    const secret = loadSecret(config, { warn: (m) => warnings.push(m) }, {
      KEEL_TEST_SECRET: ` ${"s".repeat(40)}\n`,
    });
    expect(new TextDecoder().decode(secret)).toBe("s".repeat(40));
    expect(warnings).toEqual([]);
    expect(() => loadSecret(config, {}, { KEEL_TEST_SECRET: "short" })).toThrow(
      "security.secret_env KEEL_TEST_SECRET holds only 5 bytes, fewer than the minimum of " +
        `${secretBytesMin}; use at least 32 random bytes (openssl rand -base64 32)`,
    );
    expect(() => loadSecret(config, {}, {})).toThrow(
      "security.secret_env KEEL_TEST_SECRET is not set in this process's environment",
    );
    expect(() => loadSecret(config, {}, { KEEL_TEST_SECRET: "  " })).toThrow(
      "security.secret_env KEEL_TEST_SECRET is empty",
    );
  });

  test("secret_env refuses a value that is not UTF-8: the environment carries text", () => {
    // process.env decodes a variable's bytes as UTF-8 with replacement: invalid bytes
    // arrive as U+FFFD, and two binary values would read the same.
    const config = withSecurity({ secretEnv: "KEEL_TEST_SECRET" });
    expect(() => loadSecret(config, {}, { KEEL_TEST_SECRET: `abc\ufffd${"x".repeat(30)}` }))
      .toThrow(
        "security.secret_env KEEL_TEST_SECRET is not valid UTF-8 text; the environment " +
          "carries text: give a binary secret base64-encoded, or use security.secret_file",
      );
  });
});

describe("config: secret_env", () => {
  test("a variable name, not together with secret_file; either one ends dev mode", () => {
    const ok = parse("  secret_env: KEEL_SECRET");
    expect(ok.problems).toEqual([]);
    expect(ok.config?.security.secretEnv).toBe("KEEL_SECRET");
    expect(ok.warnings.map((w) => w.path)).not.toContain("security.secret_file");
    expect(parse("  admin_token: x").warnings.map((w) => w.path)).toContain(
      "security.secret_file",
    );
    expect(parse("  secret_env: 1BAD-NAME").problems.map((p) => p.path)).toEqual([
      "security.secret_env",
    ]);
    expect(
      parse("  secret_env: KEEL_SECRET\n  secret_file: /etc/keel/secret").problems.map((p) =>
        p.message
      ),
    ).toEqual(["set together with security.secret_file: the secret comes from one of them"]);
    expect(securityStatus(withSecurity({ secretEnv: "KEEL_SECRET" })).peerAuth).toBe(
      "hmac-sha256",
    );
  });
});

describe("loadTls", () => {
  test("reads the PEM files, and refuses a file that is not PEM", () => {
    const cert = file("tls-cert.pem", "-----BEGIN CERTIFICATE-----\nAA\n");
    const key = file("tls-key.pem", "-----BEGIN EC PRIVATE KEY-----\nBB\n");
    const ca = file("tls-ca.pem", "-----BEGIN CERTIFICATE-----\nCC\n");
    expect(loadTls(withSecurity({}))).toBeUndefined();
    expect(loadTls(withSecurity({ tls: { certFile: cert, keyFile: key, caFile: ca } }))).toEqual({
      cert: "-----BEGIN CERTIFICATE-----\nAA\n",
      key: "-----BEGIN EC PRIVATE KEY-----\nBB\n",
      ca: "-----BEGIN CERTIFICATE-----\nCC\n",
    });
    expect(() => loadTls(withSecurity({ tls: { certFile: key, keyFile: key, caFile: undefined } })))
      .toThrow(`security.tls.cert_file "${key}" does not hold a PEM certificate`);
  });
});

describe("securityStatus", () => {
  test("dev mode and everything off, then everything on", () => {
    expect(securityStatus(withSecurity({}))).toEqual({
      peerAuth: "none (dev mode)",
      adminToken: false,
      clientToken: false,
      tls: false,
    });
    expect(securityStatus(withSecurity({
      secretFile: "/s",
      adminToken: "a",
      clientToken: "c",
      tls: { certFile: "c", keyFile: "k", caFile: undefined },
    }))).toEqual({ peerAuth: "hmac-sha256", adminToken: true, clientToken: true, tls: true });
  });
});
