// Helpers over a validated Config's members, for the code that runs a node or talks to one.

import type { Config, MemberConfig } from "./types.ts";

/** memberByName finds a member by its exact name. */
export function memberByName(config: Config, name: string): MemberConfig | undefined {
  return config.members.find((member) => member.name === name);
}

/**
 * gossipAddressed is true for a member listed by name alone: its peer and http addresses
 * are learned by gossip (the name scheme), not configured.
 */
export function gossipAddressed(member: MemberConfig): boolean {
  return member.peer === undefined;
}
