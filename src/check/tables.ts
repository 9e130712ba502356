// Helpers for the search's integer tables (typed arrays indexed by op, node or state id).

/** nil marks no op, no node and no needed state in the search's integer tables. */
export const nil = -1;

/** tabulate fills array with value(index) for each index, and returns it. */
export function tabulate<A extends { length: number; [index: number]: number }>(
  array: A,
  value: (index: number) => number,
): A {
  for (let index = 0; index < array.length; index++) array[index] = value(index);
  return array;
}

/** growInt32 returns array, or a copy at least `needed` long when it is shorter. */
export function growInt32(array: Int32Array<ArrayBuffer>, needed: number): Int32Array<ArrayBuffer> {
  if (needed <= array.length) return array;
  const grown = new Int32Array(Math.max(array.length * 2, needed));
  grown.set(array);
  return grown;
}
