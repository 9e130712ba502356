// The ledger: accounts and transfers, replicated by keel (docs/services.md).
//
// Invariants, checked by `audit` and by restore:
// - the total of every account's balance plus its held amount never changes after the
//   genesis command set it (money is moved, never made or lost);
// - no balance and no held amount is ever negative.
//
// Holds are pending transfers: `hold` moves an amount from the payer's balance to its held
// amount, and a cluster timer expires the hold after `ttlMs` of log time unless `capture`
// (pay the payee) or `release` (give it back) came first. The expiry is a log entry, so
// every member releases the hold at the same log position, once.
//
// Commands (POST /v1/command, JSON):
//   {"type":"genesis","balances":{"alice":1000,"bob":1000}}   once, on an empty ledger
//   {"type":"open","account":"carol"}                          a new account at 0
//   {"type":"transfer","from":"alice","to":"bob","amount":25}
//   {"type":"hold","from":"alice","to":"bob","amount":10,"ttlMs":30000}
//   {"type":"capture","hold":"h42"}  |  {"type":"release","hold":"h42"}
// Results: {"ok":true,...} or {"ok":false,"error":"insufficient_funds","message":"..."}.
// Queries (POST /v1/query, JSON):
//   {"type":"balances"}   every account, the total, the supply and counts
//   {"type":"account","account":"alice"}
//   {"type":"holds"}      open holds, and the latest expiries with their log positions

import { type ApplyContext, jsonService, type Service } from "keel";

/** Bounds that keep the ledger's state and its snapshot finite. */
export const accountsMax = 100_000;
export const holdsMax = 50_000;
export const expiriesKept = 1000;
export const holdTtlMsMax = 24 * 60 * 60 * 1000;
const accountPattern = /^[A-Za-z0-9_.-]{1,64}$/;

export interface Account {
  balance: number;
  held: number;
}

export interface Hold {
  id: string;
  from: string;
  to: string;
  amount: number;
  expiresAtMs: number;
}

/** Expiry records where a hold's timer fired: the same on every member. */
export interface Expiry {
  hold: string;
  index: number;
  timeMs: number;
}

export type LedgerCommand =
  | { type: "genesis"; balances: Record<string, number> }
  | { type: "open"; account: string }
  | { type: "transfer"; from: string; to: string; amount: number }
  | { type: "hold"; from: string; to: string; amount: number; ttlMs: number }
  | { type: "capture"; hold: string }
  | { type: "release"; hold: string };

export type LedgerResult =
  | { ok: true; index: number; [field: string]: unknown }
  | { ok: false; error: LedgerError; message: string };

export type LedgerError =
  | "bad_command"
  | "already_initialized"
  | "not_initialized"
  | "unknown_account"
  | "account_exists"
  | "insufficient_funds"
  | "unknown_hold"
  | "limit";

export type LedgerQuery =
  | { type: "balances" }
  | { type: "account"; account: string }
  | { type: "holds" };

/** Refusal is an expected refusal of a command: an error result, not a throw. */
class Refusal extends Error {
  constructor(readonly error: LedgerError, message: string) {
    super(message);
  }
}

/** Ledger is the state machine. Every method is deterministic: no clock, no randomness. */
export class Ledger {
  /** The total set by genesis; null before it. */
  supply: number | null = null;
  accounts = new Map<string, Account>();
  holds = new Map<string, Hold>();
  expiries: Expiry[] = [];
  expiredTotal = 0;

  apply(command: LedgerCommand, context: ApplyContext): LedgerResult {
    try {
      return { ok: true, index: context.index, ...this.#apply(command, context) };
    } catch (error: unknown) {
      if (error instanceof Refusal) {
        return { ok: false, error: error.error, message: error.message };
      }
      throw error;
    }
  }

  #apply(command: LedgerCommand, context: ApplyContext): Record<string, unknown> {
    if (typeof command !== "object" || command === null) {
      throw new Refusal("bad_command", "A command must be a JSON object");
    }
    switch (command.type) {
      case "genesis":
        return this.#genesis(command.balances);
      case "open": {
        this.#initialized();
        const name = accountName(command.account, "account");
        if (this.accounts.has(name)) {
          throw new Refusal("account_exists", `Account ${JSON.stringify(name)} exists`);
        }
        if (this.accounts.size >= accountsMax) {
          throw new Refusal("limit", `The ledger holds the maximum of ${accountsMax} accounts`);
        }
        this.accounts.set(name, { balance: 0, held: 0 });
        return { account: name };
      }
      case "transfer": {
        const { from, to, amount } = this.#movement(command);
        from.balance -= amount;
        to.balance += amount;
        return { from: from.balance, to: to.balance };
      }
      case "hold": {
        const { from, amount } = this.#movement(command);
        const ttlMs = command.ttlMs;
        if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > holdTtlMsMax) {
          throw new Refusal("bad_command", `ttlMs must be an integer from 1 to ${holdTtlMsMax}`);
        }
        if (this.holds.size >= holdsMax) {
          throw new Refusal("limit", `The ledger holds the maximum of ${holdsMax} open holds`);
        }
        // The entry's index names the hold: unique, and the same on every member.
        const id = `h${context.index}`;
        const hold: Hold = {
          id,
          from: command.from,
          to: command.to,
          amount,
          expiresAtMs: context.timeMs + ttlMs,
        };
        from.balance -= amount;
        from.held += amount;
        this.holds.set(id, hold);
        context.schedule(timerId(id), hold.expiresAtMs);
        return { hold: id, expiresAtMs: hold.expiresAtMs };
      }
      case "capture":
      case "release": {
        const hold = this.holds.get(String(command.hold));
        if (hold === undefined) {
          throw new Refusal("unknown_hold", `No open hold ${JSON.stringify(command.hold)}`);
        }
        context.cancel(timerId(hold.id));
        this.#settle(hold, command.type === "capture" ? hold.to : hold.from);
        return { hold: hold.id, settled: command.type === "capture" ? "captured" : "released" };
      }
      default:
        throw new Refusal(
          "bad_command",
          `Unknown command type ${JSON.stringify((command as { type?: unknown }).type)}`,
        );
    }
  }

  /** onTimer expires a hold: its amount goes back to the payer. */
  onTimer(id: string, context: ApplyContext): void {
    const hold = this.holds.get(id.replace(/^hold:/, ""));
    if (hold === undefined) return;
    this.#settle(hold, hold.from);
    this.expiredTotal++;
    this.expiries.push({ hold: hold.id, index: context.index, timeMs: context.timeMs });
    if (this.expiries.length > expiriesKept) this.expiries.shift();
  }

  query(request: LedgerQuery): unknown {
    switch (request?.type) {
      case "balances":
        return {
          accounts: Object.fromEntries(this.accounts),
          ...this.audit(),
          holds: this.holds.size,
          expired: this.expiredTotal,
        };
      case "account": {
        const account = this.accounts.get(String(request.account));
        return account === undefined
          ? { ok: false, error: "unknown_account", message: `No account ${request.account}` }
          : { ok: true, account: request.account, ...account };
      }
      case "holds":
        return { holds: [...this.holds.values()], expiries: this.expiries };
      default:
        return { ok: false, error: "bad_command", message: "Unknown query type" };
    }
  }

  /** audit recomputes the total and checks the invariants. */
  audit(): { total: number; supply: number | null; consistent: boolean } {
    let total = 0;
    let negative = false;
    for (const account of this.accounts.values()) {
      total += account.balance + account.held;
      if (account.balance < 0 || account.held < 0) negative = true;
    }
    const consistent = !negative && total === (this.supply ?? 0);
    return { total, supply: this.supply, consistent };
  }

  snapshot(): unknown {
    return {
      version: 1,
      supply: this.supply,
      accounts: [...this.accounts].map(([name, a]) => [name, a.balance, a.held]),
      holds: [...this.holds.values()],
      expiries: this.expiries,
      expiredTotal: this.expiredTotal,
    };
  }

  restore(state: unknown): void {
    const s = state as {
      version?: unknown;
      supply?: unknown;
      accounts?: unknown;
      holds?: unknown;
      expiries?: unknown;
      expiredTotal?: unknown;
    };
    if (s?.version !== 1 || !Array.isArray(s.accounts) || !Array.isArray(s.holds)) {
      throw new Error("Not a ledger snapshot (version 1)");
    }
    const restored = new Ledger();
    restored.supply = s.supply === null ? null : Number(s.supply);
    for (const [name, balance, held] of s.accounts as [string, number, number][]) {
      restored.accounts.set(name, { balance, held });
    }
    for (const hold of s.holds as Hold[]) restored.holds.set(hold.id, hold);
    restored.expiries = (s.expiries ?? []) as Expiry[];
    restored.expiredTotal = Number(s.expiredTotal ?? 0);
    const audit = restored.audit();
    if (!audit.consistent) {
      throw new Error(
        `Ledger snapshot breaks the invariants: total ${audit.total}, supply ${audit.supply}`,
      );
    }
    this.supply = restored.supply;
    this.accounts = restored.accounts;
    this.holds = restored.holds;
    this.expiries = restored.expiries;
    this.expiredTotal = restored.expiredTotal;
  }

  #genesis(balances: unknown): Record<string, unknown> {
    if (this.supply !== null) {
      throw new Refusal("already_initialized", "The ledger already had its genesis");
    }
    if (typeof balances !== "object" || balances === null || Array.isArray(balances)) {
      throw new Refusal("bad_command", "balances must be an object of account: amount");
    }
    const entries = Object.entries(balances);
    if (entries.length === 0 || entries.length > accountsMax) {
      throw new Refusal("bad_command", `genesis needs 1 to ${accountsMax} accounts`);
    }
    let supply = 0;
    for (const [name, amount] of entries) {
      accountName(name, "account");
      if (!Number.isSafeInteger(amount) || (amount as number) < 0) {
        throw new Refusal("bad_command", `Opening balance of ${name} must be an integer >= 0`);
      }
      supply += amount as number;
    }
    if (!Number.isSafeInteger(supply)) throw new Refusal("bad_command", "Supply is too large");
    for (const [name, amount] of entries) {
      this.accounts.set(name, { balance: amount as number, held: 0 });
    }
    this.supply = supply;
    return { supply, accounts: entries.length };
  }

  #initialized(): void {
    if (this.supply === null) {
      throw new Refusal("not_initialized", "The ledger has no genesis yet");
    }
  }

  /** movement validates a transfer or hold and returns its accounts and amount. */
  #movement(
    command: { from: unknown; to: unknown; amount: unknown },
  ): { from: Account; to: Account; amount: number } {
    this.#initialized();
    const fromName = accountName(command.from, "from");
    const toName = accountName(command.to, "to");
    if (fromName === toName) throw new Refusal("bad_command", "from and to must differ");
    const amount = command.amount;
    if (!Number.isSafeInteger(amount) || (amount as number) < 1) {
      throw new Refusal("bad_command", "amount must be a positive integer");
    }
    const from = this.#account(fromName);
    const to = this.#account(toName);
    if (from.balance < (amount as number)) {
      throw new Refusal(
        "insufficient_funds",
        `${fromName} has ${from.balance}, less than ${amount}`,
      );
    }
    return { from, to, amount: amount as number };
  }

  #account(name: string): Account {
    const account = this.accounts.get(name);
    if (account === undefined) {
      throw new Refusal("unknown_account", `No account ${JSON.stringify(name)}`);
    }
    return account;
  }

  #settle(hold: Hold, payee: string): void {
    const from = this.#account(hold.from);
    const to = this.#account(payee);
    from.held -= hold.amount;
    to.balance += hold.amount;
    this.holds.delete(hold.id);
  }
}

function accountName(value: unknown, field: string): string {
  if (typeof value !== "string" || !accountPattern.test(value)) {
    throw new Refusal("bad_command", `${field} must be 1 to 64 of A-Z a-z 0-9 _ . -`);
  }
  return value;
}

function timerId(hold: string): string {
  return `hold:${hold}`;
}

/** createLedger is the service factory the ledger binary passes to keel. */
export function createLedger(): Service {
  return jsonService<LedgerCommand, LedgerResult, LedgerQuery, unknown>(new Ledger());
}
