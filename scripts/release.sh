#!/usr/bin/env bash
# make release: the downloadable binaries, from one machine, and their SHA256SUMS.
#
#   dist/release/keel-<version>-linux-x64            x86-64 with AVX2 (Haswell, 2013, and later)
#   dist/release/keel-<version>-linux-x64-baseline   any x86-64 (older VMs and CPUs without AVX2)
#   dist/release/keel-<version>-linux-arm64          aarch64 (Graviton, Ampere, Raspberry Pi 4+)
#   dist/release/SHA256SUMS                          `sha256sum -c SHA256SUMS` checks them
#
# bun build --compile appends the bundle to a Bun runtime of the target. Bun would download
# a foreign runtime itself at compile time; instead each runtime comes from its npm package
# (@oven/bun-linux-x64, -x64-baseline, @oven/bun-linux-aarch64, the same version as the Bun
# in node_modules) through npm, which checks the registry's integrity hash and caches it,
# and bun is pointed at it with --compile-executable-path. Once fetched (.tmp/bun-runtimes/)
# a release builds offline.
#
# Environment (the Makefile passes them): KEEL_BUILD_COMMIT, KEEL_BUILD_DIRTY,
# KEEL_BUILD_TIME, baked into each binary with --define (keel version prints them).
set -euo pipefail
cd "$(dirname "$0")/.."

bun=./node_modules/.bin/bun
version=$(node -p 'require("./package.json").version')
bun_version=$("$bun" --version)
out=dist/release
runtimes=.tmp/bun-runtimes/$bun_version
commit=${KEEL_BUILD_COMMIT:-unknown}
dirty=${KEEL_BUILD_DIRTY:-false}
built=${KEEL_BUILD_TIME:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}

# target (bun build --target, minus "bun-") -> npm package of its runtime
declare -A packages=(
  [linux-x64]=@oven/bun-linux-x64
  [linux-x64-baseline]=@oven/bun-linux-x64-baseline
  [linux-arm64]=@oven/bun-linux-aarch64
)
targets=(linux-x64 linux-x64-baseline linux-arm64)

# runtime TARGET: the path of the Bun runtime for TARGET, fetched through npm if missing.
runtime() {
  local target=$1 package=${packages[$1]}
  local dir=$runtimes/${package#@oven/}
  if [ ! -x "$dir/bin/bun" ]; then
    echo "fetching the $target runtime: npm pack $package@$bun_version" >&2
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$package@$bun_version" >/dev/null)
    mkdir -p "$dir"
    tar -xzf "$tmp"/*.tgz -C "$dir" --strip-components=1 package/bin/bun package/package.json
    rm -rf "$tmp"
    local got
    got=$(node -p "require('./$dir/package.json').version")
    if [ "$got" != "$bun_version" ]; then
      echo "release: $package is $got, not $bun_version" >&2
      exit 1
    fi
  fi
  echo "$dir/bin/bun"
}

# Two targets must not get the same runtime: a baseline package that carries the AVX2 build
# (or the reverse) would ship a "baseline" binary that dies on the CPUs it is for.
if cmp -s "$(runtime linux-x64)" "$(runtime linux-x64-baseline)"; then
  echo "release: warning: the runtimes of ${packages[linux-x64]} and ${packages[linux-x64-baseline]}" \
    "$bun_version are the same file: the -baseline binary may need AVX2 like the other" >&2
fi

rm -rf "$out"
mkdir -p "$out"
for target in "${targets[@]}"; do
  executable=$(runtime "$target")
  "$bun" build --compile --minify-syntax --sourcemap \
    --target="bun-$target" --compile-executable-path="$executable" \
    --define "KEEL_BUILD_COMMIT=\"$commit\"" \
    --define "KEEL_BUILD_DIRTY=\"$dirty\"" \
    --define "KEEL_BUILD_TIME=\"$built\"" \
    --define "KEEL_BUILD_TARGET=\"bun-$target\"" \
    src/main.ts --outfile "$out/keel-$version-$target"
done
# The source maps are embedded in each binary (stack traces name src/ lines); the copies
# bun writes beside them are not part of the release.
rm -f "$out"/*.map
(cd "$out" && sha256sum keel-"$version"-* > SHA256SUMS)

# What was built: each binary's format, and the version of those this machine can run.
for target in "${targets[@]}"; do
  binary=$out/keel-$version-$target
  if command -v file >/dev/null; then file -b "$binary" | cut -d, -f1-2 | sed "s|^|$binary: |"; fi
done
case "$(uname -m)" in
  x86_64) "$out/keel-$version-linux-x64-baseline" --version ;;
  aarch64) "$out/keel-$version-linux-arm64" --version ;;
esac
if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then
  "$out/keel-$version-linux-x64" --version
fi
cat "$out/SHA256SUMS"
