// GET /: the live dashboard, one self-contained page (inline CSS and JS, no external
// assets). The HTML is imported as text, so `bun build --compile` embeds it in dist/keel;
// nothing is built at runtime. The page itself reads /status, /readyz and /admin/events.

import type { Hono } from "hono";
import { createHash } from "node:crypto";
import page from "./index.html" with { type: "text" };

/** dashboardHtml is the page, as embedded in the binary. */
export const dashboardHtml: string = textOf(page);

// The Content-Security-Policy allows exactly the page's own inline script and style (by
// hash), fetches to any member (connect-src *), and nothing else: no external assets, no
// framing, no forms.
const contentSecurityPolicy = [
  "default-src 'none'",
  `script-src ${inlineHashes(dashboardHtml, "script")}`,
  `style-src ${inlineHashes(dashboardHtml, "style")}`,
  "connect-src *",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** registerDashboard adds GET / to app. */
export function registerDashboard(app: Hono): void {
  app.get("/", (c) =>
    c.html(dashboardHtml, 200, {
      "content-security-policy": contentSecurityPolicy,
      "x-content-type-options": "nosniff",
      "cache-control": "no-cache",
    }));
}

function textOf(imported: unknown): string {
  // Bun's types declare *.html imports as HTML bundles; with type "text" it is a string.
  if (typeof imported !== "string" || !imported.startsWith("<!doctype html>")) {
    throw new TypeError("The dashboard page was not embedded as text");
  }
  return imported;
}

/** inlineHashes lists the CSP sources ('sha256-...') of every inline <tag> of the page. */
function inlineHashes(html: string, tag: "script" | "style"): string {
  const pattern = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g");
  const hashes = [...html.matchAll(pattern)].map((match) =>
    `'sha256-${createHash("sha256").update(match[1] ?? "").digest("base64")}'`
  );
  return hashes.length > 0 ? hashes.join(" ") : "'none'";
}
