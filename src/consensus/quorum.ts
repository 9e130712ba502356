/** quorumSize is the smallest majority of n voters. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/**
 * committedIndex returns the highest index held by a majority, given every voter's match
 * index (the leader's own durable last index included).
 */
export function committedIndex(matchIndexes: number[]): number {
  const sorted = matchIndexes.slice().sort((a, b) => b - a);
  return sorted[quorumSize(sorted.length) - 1] ?? 0;
}
