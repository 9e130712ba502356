// Security material named in the config, read at start: the shared cluster secret
// (security.secret_file, or the variable security.secret_env names), what peer handshakes and gossip are authenticated with
// (HMAC-SHA256), and the TLS certificate, key and CA (security.tls). No secret configured
// is dev mode: nothing is authenticated, and the node says so at start and on /status.

import { readFileSync, statSync } from "node:fs";
import { describeFileError } from "./messages.ts";
import type { Config } from "./types.ts";

/** secretFileBytesMax bounds security.secret_file: a secret is short; more is the wrong file. */
export const secretFileBytesMax = 4096;

/** secretBytesWeak: a secret shorter than this is accepted with a warning (guessable). */
export const secretBytesWeak = 16;

/** SecretError is a secret file that cannot be used; the message names the file and why. */
export class SecretError extends Error {
  override name = "SecretError";
}

export interface LoadSecretOptions {
  /** Receives warnings: the file is readable by other users, the secret is short. */
  warn?: (message: string) => void;
}

/**
 * loadSecret reads the cluster secret named by security.secret_file: the file's text with
 * surrounding whitespace (the final newline) trimmed, as UTF-8 bytes. undefined when no
 * file is configured (dev mode). Throws SecretError when the file is missing, unreadable,
 * empty or bigger than secretFileBytesMax.
 */
export function loadSecret(
  config: Config,
  options: LoadSecretOptions = {},
  env: Record<string, string | undefined> = process.env,
): Uint8Array | undefined {
  const name = config.security.secretEnv;
  if (name !== undefined) return readSecretEnv(name, env, options);
  const path = config.security.secretFile;
  if (path === undefined) return undefined;
  return readSecretFile(path, options);
}

/**
 * readSecretEnv reads the secret from the environment variable security.secret_env names:
 * its value with surrounding whitespace trimmed. Unset or empty is an error, not dev mode:
 * the config asked for a secret.
 */
export function readSecretEnv(
  name: string,
  env: Record<string, string | undefined>,
  options: LoadSecretOptions = {},
): Uint8Array {
  const at = `security.secret_env ${name}`;
  const value = env[name];
  if (value === undefined) {
    throw new SecretError(`${at} is not set in this process's environment`);
  }
  const secret = new TextEncoder().encode(value.trim());
  if (secret.byteLength === 0) throw new SecretError(`${at} is empty: it must hold the secret`);
  if (secret.byteLength > secretFileBytesMax) {
    throw new SecretError(
      `${at} holds ${secret.byteLength} bytes, more than the maximum of ${secretFileBytesMax}`,
    );
  }
  warnIfWeak(secret, at, options);
  return secret;
}

/** readSecretFile reads one secret file; see loadSecret. */
export function readSecretFile(path: string, options: LoadSecretOptions = {}): Uint8Array {
  const at = `security.secret_file "${path}"`;
  let text: string;
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
    text = readFileSync(path, "utf8");
  } catch (error: unknown) {
    if (error instanceof SecretError) throw error;
    throw new SecretError(`Cannot read ${at}: ${describeFileError(error)}`, { cause: error });
  }
  const secret = new TextEncoder().encode(text.trim());
  if (secret.byteLength === 0) {
    throw new SecretError(`${at} is empty: it must hold the cluster secret`);
  }
  warnIfWeak(secret, at, options);
  return secret;
}

function warnIfWeak(secret: Uint8Array, at: string, options: LoadSecretOptions): void {
  if (secret.byteLength < secretBytesWeak) {
    options.warn?.(
      `${at} holds only ${secret.byteLength} bytes; use at least 32 random bytes ` +
        "(openssl rand -base64 32)",
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
