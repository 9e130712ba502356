// Fakes of NodeApi and OpsApi for the operator-surface tests (ops*.test.ts,
// dashboard*.test.ts): every answer is a field the test sets.

import type {
  AdminResult,
  Check,
  LeaderInfo,
  NodeApi,
  NodeStatusView,
  OpsApi,
  OpsEvent,
  ReadBarrierResult,
  SessionKey,
  SubmitResult,
} from "../../src/http/api.ts";
import { Registry } from "../../src/lib/metrics.ts";
import { KvService } from "../../src/service/kv.ts";
import { statusView } from "../support/status_view.ts";

export const leaderInfo: LeaderInfo = { name: "node-b", httpUrl: "http://127.0.0.12:7080" };

/** FakeNode applies kv commands at once, as a leader that is never wrong. */
export class FakeNode implements NodeApi {
  readonly kv = new KvService();
  index = 0;

  constructor(readonly name: string) {}

  submit(command: Uint8Array, _session: SessionKey | undefined): Promise<SubmitResult> {
    this.index++;
    const result = this.kv.apply(command, { index: this.index, term: 1 });
    return Promise.resolve({ ok: true, result, index: this.index });
  }

  readBarrier(): Promise<ReadBarrierResult> {
    return Promise.resolve({ ok: true });
  }

  leader(): LeaderInfo | null {
    return { name: this.name, httpUrl: "http://self" };
  }

  status(): NodeStatusView {
    return statusView({ name: this.name, role: "leader", term: 7, commitIndex: this.index });
  }
}

export function passing(name: string): Check {
  return { name, ok: true, detail: `${name} is fine` };
}

export function failing(name: string): Check {
  return { name, ok: false, detail: `${name} is broken` };
}

/** FakeOps records admin calls and answers what the test set. */
export class FakeOps implements OpsApi {
  healthChecks: Check[] = [passing("storage_writable")];
  readinessChecks: Check[] = [
    passing("leader_known"),
    passing("applied_caught_up"),
    passing("not_recovering"),
    passing("not_fenced"),
    passing("storage_writable"),
  ];
  leading = true;
  adminToken: string | undefined = "s3cret-token";
  calls: string[] = [];
  snapshotResult: AdminResult<{ index: number; bytes: number }> = {
    ok: true,
    index: 42,
    bytes: 1234,
  };
  stepDownResult: AdminResult<{ leader: string }> = { ok: true, leader: "node-c" };
  stepDownTargets: (string | undefined)[] = [];
  eventList: OpsEvent[] = [{ at: 1_700_000_000_000, kind: "leader-changed", message: "x" }];
  #suspended = false;
  readonly registry = new Registry();
  readonly term = this.registry.gauge("keel_term", "Current term");
  readonly proposals = this.registry.counter("keel_proposals_total", "Proposals");

  constructor() {
    this.term.set(7);
    this.proposals.inc({}, 3);
  }

  health(): Check[] {
    return this.healthChecks;
  }

  readiness(): Check[] {
    return this.readinessChecks;
  }

  isLeader(): boolean {
    return this.leading;
  }

  metricsText(): string {
    return this.registry.render();
  }

  snapshotNow(): Promise<AdminResult<{ index: number; bytes: number }>> {
    this.calls.push("snapshot");
    return Promise.resolve(this.snapshotResult);
  }

  stepDown(to: string | undefined): Promise<AdminResult<{ leader: string }>> {
    this.calls.push("step-down");
    this.stepDownTargets.push(to);
    return Promise.resolve(this.stepDownResult);
  }

  suspend(): void {
    this.calls.push("suspend");
    this.#suspended = true;
  }

  resume(): void {
    this.calls.push("resume");
    this.#suspended = false;
  }

  suspended(): boolean {
    return this.#suspended;
  }

  shutdown(): Promise<void> {
    this.calls.push("shutdown");
    return Promise.resolve();
  }

  events(): OpsEvent[] {
    return this.eventList;
  }
}
