// judgeHello: the accepting side's whole decision on a Hello, as a value. Pure (HMAC is
// computation): inbound.ts performs what it says (log, reply, accept or close).
//
// The order is the rule: another protocol version first (it may sign differently), then
// authentication, so nothing about this node or its config goes to an unproven peer;
// then the config checks of checkHello; then the node's own judgement of the host
// (checkPeer: fenced out, or rolled back). A refusal before the peer proved the secret
// (a bad proof, another version) carries a generic reason and anonymousName in place of
// our name and incarnation, and no state: an unauthenticated stranger learns nothing
// that identifies the member. The acceptor's own log line keeps the detail.

import type { NodeId } from "../consensus/types.ts";
import {
  anonymousName,
  authEqual,
  checkHello,
  checkHelloAuth,
  type Hello,
  helloAuth,
  type HelloReply,
  type LocalHandshakeInfo,
  protocolVersions,
  speaksProtocol,
  unprovenReason,
} from "./handshake.ts";
import type { LocalState, PeerRefusal } from "./options.ts";

/** HelloJudgeInput is everything judgeHello needs; it reads nothing else. */
export interface HelloJudgeInput {
  hello: Hello;
  /** The nonce of the Challenge we sent on this connection. */
  challenge: Uint8Array;
  secret: Uint8Array | undefined;
  local: LocalHandshakeInfo;
  self: { name: NodeId; incarnation: string };
  localState: LocalState;
  /** The node's judgement of an otherwise acceptable host. */
  checkPeer: (hello: Hello) => PeerRefusal | null;
  /** The connection's remote address, for the log line. */
  remoteAddress: string;
}

/** RefusalKind names why a Hello was refused; each has one rule in refusalRules. */
export type RefusalKind =
  | "version"
  | "unauthenticated"
  | "misdirected"
  | "mismatch"
  | "fenced"
  | "rolled-back";

export type ReplyFields = Omit<HelloReply, "auth">;

export type HelloVerdict =
  | { accepted: true; reply: ReplyFields }
  | {
    accepted: false;
    kind: RefusalKind;
    reason: string;
    reply: ReplyFields;
    /** The acceptor's own log line: what, and about whom. */
    logMessage: string;
    logFields: Record<string, unknown>;
    /**
     * The line's RepeatLog key: one per kind, claimed member (or "(other)") and reason,
     * so a peer redialling with the same problem is said once, then counted.
     */
    logKey: string;
  };

interface Refusal {
  kind: RefusalKind;
  reason: string;
  differingFields?: string[];
}

interface RefusalRule {
  /**
   * What the reply says of this member: "anonymous" (the peer proved nothing: a generic
   * reason, anonymousName, no state), "named" (our name and incarnation, no state), or
   * "full" (also our state: hasState, recovering).
   */
  tells: "anonymous" | "named" | "full";
  logMessage(hello: Hello, remoteAddress: string, reason: string): string;
  logFields(hello: Hello, remoteAddress: string, refusal: Refusal): Record<string, unknown>;
}

/** refusalRules: what each kind of refusal tells the peer, and how it is logged. */
const unprovenRule: RefusalRule = {
  tells: "anonymous",
  logMessage: (_hello, remote, reason) => `Refused peer from ${remote}: ${reason}`,
  logFields: (hello, remote) => ({ remoteAddress: remote, claimedName: hello.name }),
};

const mismatchRule: RefusalRule = {
  tells: "full",
  logMessage: (hello, remote, reason) =>
    `Refused the handshake of "${hello.name}" from ${remote}: ${reason}`,
  logFields: (hello, remote, refusal) => ({
    peer: hello.name,
    remoteAddress: remote,
    differingFields: refusal.differingFields ?? [],
  }),
};

const refusalRules: Readonly<Record<RefusalKind, RefusalRule>> = {
  version: { ...mismatchRule, tells: "anonymous" },
  unauthenticated: unprovenRule,
  // Signed with the secret, for another member: the peer holds the secret.
  misdirected: { ...unprovenRule, tells: "named" },
  mismatch: mismatchRule,
  fenced: {
    tells: "full",
    logMessage: (hello, remote, reason) =>
      `Refused peer "${hello.name}" from ${remote} (fenced): ${reason}`,
    logFields: (hello, remote) => ({
      peer: hello.name,
      remoteAddress: remote,
      incarnation: hello.incarnation,
      refusal: "fenced",
    }),
  },
  "rolled-back": {
    tells: "full",
    logMessage: (hello, remote, reason) =>
      `Refused peer "${hello.name}" from ${remote} (rolled-back): ${reason}`,
    logFields: (hello, remote) => ({
      peer: hello.name,
      remoteAddress: remote,
      incarnation: hello.incarnation,
      refusal: "rolled-back",
    }),
  },
};

/** judgeHello decides whether to accept a Hello, and what to answer and log. */
export function judgeHello(input: HelloJudgeInput): HelloVerdict {
  const { hello, self, localState } = input;
  const refusal = findRefusal(input);
  if (refusal === null) {
    return {
      accepted: true,
      reply: { accepted: true, ...self, ...localState, fenced: false, rolledBack: false },
    };
  }
  const rule = refusalRules[refusal.kind];
  return {
    accepted: false,
    kind: refusal.kind,
    reason: refusal.reason,
    reply: refusalReply(rule, refusal, self, localState),
    logMessage: rule.logMessage(hello, input.remoteAddress, refusal.reason),
    logFields: rule.logFields(hello, input.remoteAddress, refusal),
    logKey: `refused ${refusal.kind} ${claimedMember(input)} ${refusal.reason}`,
  };
}

function refusalReply(
  rule: RefusalRule,
  refusal: Refusal,
  self: HelloJudgeInput["self"],
  localState: LocalState,
): ReplyFields {
  const anonymous = rule.tells === "anonymous";
  const showsState = rule.tells === "full";
  return {
    accepted: false,
    reason: refusal.kind === "unauthenticated" ? unprovenReason : refusal.reason,
    ...(refusal.differingFields === undefined || anonymous
      ? {}
      : { differingFields: refusal.differingFields }),
    name: anonymous ? anonymousName : self.name,
    incarnation: anonymous ? anonymousName : self.incarnation,
    hasState: showsState && localState.hasState,
    recovering: showsState && localState.recovering,
    fenced: refusal.kind === "fenced",
    rolledBack: refusal.kind === "rolled-back",
  };
}

/** claimedMember is the Hello's name if it is a configured member's, else "(other)". */
function claimedMember(input: HelloJudgeInput): string {
  return input.local.memberNames.includes(input.hello.name) ? input.hello.name : "(other)";
}

function findRefusal(input: HelloJudgeInput): Refusal | null {
  const { hello } = input;
  // Another protocol version may sign differently: refused for what it is.
  if (!speaksProtocol(input.local.protocolVersions ?? protocolVersions, hello.protocolVersion)) {
    return { kind: "version", reason: checkHelloReason(input) };
  }
  const auth = checkHelloAuth(input.secret, input.challenge, input.self.name, hello);
  if (!auth.ok) {
    const elsewhere = misdirected(input);
    return elsewhere === null
      ? { kind: "unauthenticated", reason: auth.reason }
      : { kind: "misdirected", reason: elsewhere };
  }
  const check = checkHello(hello, input.local);
  if (!check.ok) {
    return { kind: "mismatch", reason: check.reason, differingFields: check.differingFields };
  }
  const peer = input.checkPeer(hello);
  return peer === null ? null : { kind: peer.kind, reason: peer.reason };
}

function checkHelloReason(input: HelloJudgeInput): string {
  const check = checkHello(input.hello, input.local);
  return check.ok ? "" : check.reason;
}

/**
 * misdirected explains a Hello that failed authentication because it was signed for
 * another member (the dialler has a stale address for it), or returns null.
 */
function misdirected(input: HelloJudgeInput): string | null {
  const { secret, hello } = input;
  if (secret === undefined || hello.auth.byteLength === 0) return null;
  for (const name of input.local.memberNames) {
    if (name === input.self.name) continue;
    if (authEqual(hello.auth, helloAuth(secret, input.challenge, name, hello))) {
      return `the peer meant to reach "${name}", not us (it has a stale address for "${name}")`;
    }
  }
  return null;
}
