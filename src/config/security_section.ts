// The `security:` section: the cluster secret's source (a file or an environment variable;
// secret.ts reads it at start), the admin and client tokens (inline or from a file, read
// here at load) and the TLS files.

import { readFileSync, statSync } from "node:fs";
import { adminTokenFileBytesMax } from "./limits.ts";
import { describeFileError, quote } from "./messages.ts";
import { hasValue, type Mapping, readMapping, readSection, readString } from "./readers.ts";
import { envNamePattern, keys } from "./schema.ts";
import type { Config, ConfigProblem, TlsConfig } from "./types.ts";

/**
 * readSecurity reads the `security:` section. Without a secret source it warns: peers are
 * not authenticated (dev mode).
 */
export function readSecurity(
  root: Mapping,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): Config["security"] {
  const security = readSection(root, "security", keys.security, problems);
  const secretFile = readString(security, "secret_file", "security", problems);
  const secretEnv = readString(security, "secret_env", "security", problems);
  if (secretEnv !== undefined && !envNamePattern.test(secretEnv)) {
    problems.push({
      path: "security.secret_env",
      message: `${JSON.stringify(secretEnv)} is not an environment variable name ` +
        "(letters, digits and _, not starting with a digit)",
    });
  }
  if (hasValue(security, "secret_file") && hasValue(security, "secret_env")) {
    problems.push({
      path: "security.secret_env",
      message: "set together with security.secret_file: the secret comes from one of them",
    });
  }
  const adminToken = readToken(security, "admin_token", problems, warnings);
  const clientToken = readToken(security, "client_token", problems, warnings);
  const tls = readTls(security, problems);
  if (!hasValue(security, "secret_file") && !hasValue(security, "secret_env")) {
    warnings.push({
      path: "security.secret_file",
      message: "not set (nor security.secret_env): peers are not authenticated (dev mode)",
    });
  }
  return {
    secretFile,
    ...(secretEnv === undefined ? {} : { secretEnv }),
    adminToken,
    ...(clientToken === undefined ? {} : { clientToken }),
    ...(tls === undefined ? {} : { tls }),
  };
}

/**
 * readToken reads a bearer token given inline (security.KEY) or in a file
 * (security.KEY_file), one of the two at most.
 */
function readToken(
  security: Mapping,
  key: "admin_token" | "client_token",
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): string | undefined {
  const token = readString(security, key, "security", problems, { secret: true });
  const file = readString(security, `${key}_file`, "security", problems);
  if (file === undefined) return token;
  if (hasValue(security, key)) {
    problems.push({
      path: `security.${key}_file`,
      message: `give only one of "${key}" and "${key}_file"`,
    });
    return undefined;
  }
  return readTokenFile(file, `security.${key}_file`, problems, warnings);
}

/**
 * readTokenFile reads a token from a file (a path relative to the working directory), so
 * it need not sit in the shared cluster file. Surrounding whitespace and the final
 * newline are ignored; the token itself must not contain whitespace.
 */
function readTokenFile(
  path: string,
  at: string,
  problems: ConfigProblem[],
  warnings: ConfigProblem[],
): string | undefined {
  const file = quote(path);
  let text: string;
  try {
    const stat = statSync(path);
    if (stat.size > adminTokenFileBytesMax) {
      const limit = `the maximum of ${adminTokenFileBytesMax} bytes for a token`;
      problems.push({ path: at, message: `${file} is ${stat.size} bytes, more than ${limit}` });
      return undefined;
    }
    // Bits 0o077: the group or others may read or write the token.
    if (process.platform !== "win32" && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8);
      warnings.push({
        path: at,
        message: `${file} is accessible to other users (mode ${mode}); chmod 600 it`,
      });
    }
    text = readFileSync(path, "utf8");
  } catch (error: unknown) {
    problems.push({ path: at, message: `cannot read ${file}: ${describeFileError(error)}` });
    return undefined;
  }
  const token = text.trim();
  if (token === "") {
    problems.push({ path: at, message: `${file} is empty: it must hold the token` });
    return undefined;
  }
  if (/\s/.test(token)) {
    problems.push({
      path: at,
      message: `${file} must hold one token without spaces or line breaks`,
    });
    return undefined;
  }
  return token;
}

/**
 * readTls reads security.tls: cert_file and key_file (PEM) are required, ca_file is
 * optional. Each must be a readable file now, so a typo stops the node at start.
 */
function readTls(security: Mapping, problems: ConfigProblem[]): TlsConfig | undefined {
  if (!hasValue(security, "tls")) return undefined;
  const tls = readMapping(security["tls"], "security.tls", keys.tls, problems);
  if (tls === undefined) return undefined;
  const file = (key: string, required: boolean): string | undefined => {
    const path = readString(tls, key, "security.tls", problems, { required });
    if (path === undefined) return undefined;
    try {
      if (!statSync(path).isFile()) {
        problems.push({ path: `security.tls.${key}`, message: `${quote(path)} is not a file` });
        return undefined;
      }
    } catch (error: unknown) {
      problems.push({
        path: `security.tls.${key}`,
        message: `cannot read ${quote(path)}: ${describeFileError(error)}`,
      });
      return undefined;
    }
    return path;
  };
  const certFile = file("cert_file", true);
  const keyFile = file("key_file", true);
  const caFile = file("ca_file", false);
  if (certFile === undefined || keyFile === undefined) return undefined;
  return { certFile, keyFile, caFile };
}
