import { fingerprint, fingerprintFields } from "../config/fingerprint.ts";
import { formatProblems, loadConfig } from "../config/parse.ts";
import { loadSecret, loadTls } from "../config/secret.ts";
import type { Config } from "../config/types.ts";
import { checkDns } from "../resolver/dns.ts";

/**
 * checkConfig validates a config file and prints its fingerprint, problems and warnings,
 * and information that is neither (how long peers take to reach a replaced host).
 */
export async function checkConfig(file: string, json: boolean): Promise<number> {
  const result = loadConfig(file);
  const info: { path: string; message: string }[] = [];
  // DNS member names are resolved (through resolver.servers when set) only in a valid config.
  if (result.config !== undefined) {
    const dns = await checkDns(result.config);
    result.warnings.push(...dns.warnings);
    info.push(...dns.notes);
    result.warnings.push(...checkSecurityFiles(result.config));
  }
  if (json) {
    process.stdout.write(
      JSON.stringify(
        {
          file,
          ok: result.config !== undefined,
          fingerprint: result.config ? fingerprint(result.config) : null,
          fields: result.config ? fingerprintFields(result.config) : null,
          problems: result.problems,
          warnings: result.warnings,
          info,
        },
        null,
        2,
      ) + "\n",
    );
    return result.config === undefined ? 2 : 0;
  }
  if (result.config === undefined) {
    process.stderr.write(formatProblems(result.problems, file) + "\n");
    for (const warning of result.warnings) {
      process.stderr.write(`${file}: warning: ${warning.path}: ${warning.message}\n`);
    }
    return 2;
  }
  const config = result.config;
  process.stdout.write(`${file}: ok\n`);
  process.stdout.write(`cluster:     ${config.clusterName}\n`);
  process.stdout.write(`fingerprint: ${fingerprint(config)}\n`);
  process.stdout.write(`members:     ${config.members.map((m) => m.name).join(", ")}\n`);
  for (const warning of result.warnings) {
    process.stdout.write(`warning: ${warning.path}: ${warning.message}\n`);
  }
  for (const note of info) process.stdout.write(`info: ${note.path}: ${note.message}\n`);
  return 0;
}

/**
 * checkSecurityFiles reads the secret (file or environment variable) and the TLS files
 * as keel run would, here. Warnings, not problems: they are per host, and this check may
 * run on another one than a member's.
 */
function checkSecurityFiles(config: Config): { path: string; message: string }[] {
  const warnings: { path: string; message: string }[] = [];
  const warn = (path: string) => (message: string) => warnings.push({ path, message });
  const secretPath = config.security.secretEnv !== undefined
    ? "security.secret_env"
    : "security.secret_file";
  try {
    loadSecret(config, { warn: warn(secretPath) });
  } catch (error: unknown) {
    warnings.push({
      path: secretPath,
      message: `${error instanceof Error ? error.message : String(error)} (on this host; ` +
        "keel run would stop with exit 2)",
    });
  }
  try {
    loadTls(config, { warn: warn("security.tls") });
  } catch (error: unknown) {
    warnings.push({
      path: "security.tls",
      message: `${error instanceof Error ? error.message : String(error)} (on this host; ` +
        "keel run would stop with exit 2)",
    });
  }
  return warnings;
}
