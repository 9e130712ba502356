// Security material named in the config, read at start: the shared cluster secret
// (security.secret_file, or the variable security.secret_env names), what peer handshakes and gossip are authenticated with
// (HMAC-SHA256), and the TLS certificate, key and CA (security.tls). No secret configured
// is dev mode: nothing is authenticated, and the node says so at start and on /status.

import { readFileSync, statSync } from "node:fs";
import { describeFileError } from "./messages.ts";
import type { Config } from "./types.ts";

/** secretFileBytesMax bounds security.secret_file: a secret is short; more is the wrong file. */
export const secretFileBytesMax = 4096;

/** secretBytesMin: a shorter secret is refused (it could be guessed). 32 random bytes are advised. */
export const secretBytesMin = 16;

/** SecretError is a secret file that cannot be used; the message names the file and why. */
export class SecretError extends Error {
  override name = "SecretError";
}

export interface LoadSecretOptions {
  /** Receives warnings: the file is readable by other users. */
  warn?: (message: string) => void;
}

/**
 * loadSecret reads the cluster secret named by security.secret_file or security.secret_env.
 * undefined when neither is configured (dev mode). Throws SecretError when it cannot be
 * used: missing, unreadable, empty, shorter than secretBytesMin or bigger than
 * secretFileBytesMax bytes, or (secret_env) not valid UTF-8.
 *
 * The rule (docs/deploy.md): a secret that is valid UTF-8 is text, and the secret is its
 * UTF-8 bytes with surrounding whitespace (the final newline) trimmed, as keel always read
 * it. A file that is not valid UTF-8 is binary, and the secret is its bytes, exactly.
 * Decoding a binary file as text would replace every invalid byte with U+FFFD, so that
 * two secrets differing only in such bytes gave the same key.
 */
export function loadSecret(
  config: Config,
  options: LoadSecretOptions = {},
  env: Record<string, string | undefined> = process.env,
): Uint8Array | undefined {
  const name = config.security.secretEnv;
  if (name !== undefined) return readSecretEnv(name, env);
  const path = config.security.secretFile;
  if (path === undefined) return undefined;
  return readSecretFile(path, options);
}

/**
 * readSecretEnv reads the secret from the environment variable security.secret_env names:
 * its value with surrounding whitespace trimmed, as UTF-8 bytes. Unset or empty is an
 * error, not dev mode: the config asked for a secret. The environment reaches the process
 * as text (invalid bytes already replaced by U+FFFD), so a value holding U+FFFD is refused:
 * a binary secret goes base64-encoded, or in a file.
 */
export function readSecretEnv(name: string, env: Record<string, string | undefined>): Uint8Array {
  const at = `security.secret_env ${name}`;
  const value = env[name];
  if (value === undefined) {
    throw new SecretError(`${at} is not set in this process's environment`);
  }
  if (value.includes(replacementCharacter)) {
    throw new SecretError(
      `${at} is not valid UTF-8 text; the environment carries text: give a binary secret ` +
        "base64-encoded, or use security.secret_file",
    );
  }
  const secret = new TextEncoder().encode(value.trim());
  if (secret.byteLength === 0) throw new SecretError(`${at} is empty: it must hold the secret`);
  if (secret.byteLength > secretFileBytesMax) {
    throw new SecretError(
      `${at} holds ${secret.byteLength} bytes, more than the maximum of ${secretFileBytesMax}`,
    );
  }
  refuseIfShort(secret, at);
  return secret;
}

/** U+FFFD is what a UTF-8 decoder puts in place of bytes that are not UTF-8. */
const replacementCharacter = "\uFFFD";

/** readSecretFile reads one secret file, text or binary; see loadSecret. */
export function readSecretFile(path: string, options: LoadSecretOptions = {}): Uint8Array {
  const at = `security.secret_file "${path}"`;
  let bytes: Uint8Array;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new SecretError(`${at} is not a regular file`);
    if (stat.size > secretFileBytesMax) {
      throw new SecretError(
        `${at} is ${stat.size} bytes, more than the maximum of ${secretFileBytesMax}`,
      );
    }
    // Bits 0o077: the group or others may read or write the secret.
    if (process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8);
      options.warn?.(`${at} is accessible to other users (mode ${mode}); chmod 600 it`);
    }
    bytes = readFileSync(path);
  } catch (error: unknown) {
    if (error instanceof SecretError) throw error;
    throw new SecretError(`Cannot read ${at}: ${describeFileError(error)}`, { cause: error });
  }
  const secret = secretOfFileBytes(bytes);
  if (secret.byteLength === 0) {
    throw new SecretError(`${at} is empty: it must hold the cluster secret`);
  }
  refuseIfShort(secret, at);
  return secret;
}

/**
 * secretOfFileBytes applies loadSecret's rule: valid UTF-8 is text, trimmed (its byte
 * order mark too, which trim() counts as whitespace); anything else is used as it is.
 */
export function secretOfFileBytes(bytes: Uint8Array): Uint8Array {
  let text: string;
  try {
    // ignoreBOM keeps a leading U+FEFF in the text, as readFileSync(path, "utf8") did.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (error: unknown) {
    if (!(error instanceof TypeError)) throw error;
    return Uint8Array.from(bytes);
  }
  return new TextEncoder().encode(text.trim());
}

function refuseIfShort(secret: Uint8Array, at: string): void {
  if (secret.byteLength < secretBytesMin) {
    throw new SecretError(
      `${at} holds only ${secret.byteLength} bytes, fewer than the minimum of ` +
        `${secretBytesMin}; use at least 32 random bytes (openssl rand -base64 32)`,
    );
  }
}

/** tlsFileBytesMax bounds each PEM file of security.tls (a certificate chain is a few KiB). */
export const tlsFileBytesMax = 1024 * 1024;

/** TlsMaterial is security.tls read: PEM text. */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** Peers (and the leader a write is forwarded to) must chain to this CA. */
  ca: string | undefined;
}

/**
 * loadTls reads the PEM files of security.tls, or returns undefined when it is not set.
 * Throws SecretError naming the file that cannot be read or does not hold PEM.
 */
export function loadTls(config: Config, options: LoadSecretOptions = {}): TlsMaterial | undefined {
  const tls = config.security.tls;
  if (tls === undefined) return undefined;
  const read = (key: string, path: string, what: RegExp): string => {
    const at = `security.tls.${key} "${path}"`;
    let text: string;
    try {
      const stat = statSync(path);
      if (stat.size > tlsFileBytesMax) {
        throw new SecretError(
          `${at} is ${stat.size} bytes, more than the maximum of ${tlsFileBytesMax}`,
        );
      }
      if (key === "key_file" && process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
        const mode = (stat.mode & 0o777).toString(8);
        options.warn?.(`${at} is accessible to other users (mode ${mode}); chmod 600 it`);
      }
      text = readFileSync(path, "utf8");
    } catch (error: unknown) {
      if (error instanceof SecretError) throw error;
      throw new SecretError(`Cannot read ${at}: ${describeFileError(error)}`, { cause: error });
    }
    if (!what.test(text)) {
      throw new SecretError(
        `${at} does not hold a PEM ${key === "key_file" ? "key" : "certificate"}`,
      );
    }
    return text;
  };
  const certificate = /-----BEGIN CERTIFICATE-----/;
  return {
    cert: read("cert_file", tls.certFile, certificate),
    key: read("key_file", tls.keyFile, /-----BEGIN [A-Z ]*PRIVATE KEY-----/),
    ca: tls.caFile === undefined ? undefined : read("ca_file", tls.caFile, certificate),
  };
}

/** SecurityStatus is what /status shows of a node's security settings. */
export interface SecurityStatus {
  /** How peer handshakes are authenticated. */
  peerAuth: "hmac-sha256" | "none (dev mode)";
  /** The admin API is enabled (security.admin_token or admin_token_file is set). */
  adminToken: boolean;
  /** The client API (/v1/*) requires a bearer token. */
  clientToken: boolean;
  /** HTTP and peer links are served over TLS. */
  tls: boolean;
}

/** securityStatus summarizes a config's security settings, for /status. */
export function securityStatus(config: Config): SecurityStatus {
  const security = config.security;
  return {
    peerAuth: security.secretFile === undefined && security.secretEnv === undefined
      ? "none (dev mode)"
      : "hmac-sha256",
    adminToken: security.adminToken !== undefined,
    clientToken: security.clientToken !== undefined,
    tls: security.tls !== undefined,
  };
}
