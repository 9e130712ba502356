// The endpoint grammar: "host:port", "1.2.3.4:port" or "[::1]:port", where host is a DNS
// name or an IP address.

import { isIPv4, isIPv6 } from "node:net";
import { quote } from "./messages.ts";
import type { Endpoint } from "./types.ts";

const dnsLabelPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const portPattern = /^[0-9]{1,5}$/;

/** formatEndpoint renders an endpoint as "host:port", with IPv6 hosts in brackets. */
export function formatEndpoint(endpoint: Endpoint): string {
  return endpoint.host.includes(":")
    ? `[${endpoint.host}]:${endpoint.port}`
    : `${endpoint.host}:${endpoint.port}`;
}

/**
 * parseEndpointText reads "host:port", "1.2.3.4:port" or "[::1]:port" and returns the
 * endpoint, or a problem message. DNS names are lowercased (DNS is case-insensitive, and
 * the fingerprint must not depend on spelling); IPv6 hosts are kept without brackets.
 */
export function parseEndpointText(text: string): Endpoint | string {
  const expected = `must be "host:port", got ${quote(text)}`;
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const match = /^\[([^\]]*)\]:(.*)$/.exec(text);
    if (match === null) return expected;
    // Lowercase the address but not a zone ("%eth0"): interface names keep their case.
    const [address = "", zone] = (match[1] ?? "").split("%");
    host = zone === undefined ? address.toLowerCase() : `${address.toLowerCase()}%${zone}`;
    portText = match[2] ?? "";
    if (!isIPv6(host)) return `host ${quote(host)} is not a valid IPv6 address`;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return expected;
    host = text.slice(0, colon).toLowerCase();
    portText = text.slice(colon + 1);
    if (host.includes(":")) {
      return `an IPv6 address must be in brackets, such as "[::1]:7070", got ${quote(text)}`;
    }
    const problem = hostProblem(host);
    if (problem !== undefined) return problem;
  }
  const port = Number(portText);
  if (!portPattern.test(portText) || port < 1 || port > 65535) {
    return "port must be 1-65535";
  }
  return { host, port };
}

function hostProblem(host: string): string | undefined {
  if (/^[0-9.]+$/.test(host)) {
    return isIPv4(host) ? undefined : `host ${quote(host)} is not a valid IPv4 address`;
  }
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  const labels = name.split(".");
  if (name.length > 253 || !labels.every((label) => dnsLabelPattern.test(label))) {
    return `host ${quote(host)} is not a valid DNS name or IP address`;
  }
  return undefined;
}
