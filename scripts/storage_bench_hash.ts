// Compares the checksums Bun ships on values of a given size (default 10 KiB), to choose
// the one storage uses (src/storage/checksum.ts). Not a test: run it by hand.
//   bun scripts/storage_bench_hash.ts [bytes=10240] [seconds per hash=1]

const bytes = Number(process.argv[2] ?? 10 * 1024);
const secondsPerHash = Number(process.argv[3] ?? 1);
const data = crypto.getRandomValues(new Uint8Array(bytes));

const hashes: Record<string, (input: Uint8Array) => unknown> = {
  "Bun.hash.crc32": (input) => Bun.hash.crc32(input),
  "Bun.hash.xxHash32": (input) => Bun.hash.xxHash32(input),
  "Bun.hash.xxHash64": (input) => Bun.hash.xxHash64(input),
  "Bun.hash.xxHash3": (input) => Bun.hash.xxHash3(input),
};

function measure(hash: (input: Uint8Array) => unknown): number {
  let calls = 0;
  let sink: unknown;
  const started = performance.now();
  let elapsed = 0;
  while ((elapsed = performance.now() - started) < secondsPerHash * 1000) {
    for (let i = 0; i < 1000; i++) sink = hash(data);
    calls += 1000;
  }
  if (sink === "never") console.log(sink);
  return calls / (elapsed / 1000);
}

const rows = [];
for (const [name, hash] of Object.entries(hashes)) {
  measure(hash); // warm-up
  const rounds = [measure(hash), measure(hash), measure(hash)].sort((a, b) => a - b);
  const callsPerSecond = rounds[1]!;
  rows.push({
    hash: name,
    bytes,
    nsPerCall: Number((1e9 / callsPerSecond).toFixed(0)),
    gibPerSecond: Number((callsPerSecond * bytes / 2 ** 30).toFixed(2)),
  });
}
console.table(rows);
