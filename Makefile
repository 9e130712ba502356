# keel — one gate for everything. Every target installs what it needs first.
# Bun, deno and tsc come from node_modules (npm ci), never from a global install.

BUN  := ./node_modules/.bin/bun
DENO := ./node_modules/.bin/deno
TSC  := ./node_modules/.bin/tsc
SRC  := $(shell find src -name '*.ts' -o -name '*.html' 2>/dev/null) package.json

.PHONY: all install build release example-ledger run test test-fast check fmt fmt-check lint typecheck bench sim chaos clean help FORCE

all: build

help:
	@echo "make run        build and start a local 3-node cluster (examples/local-3.yaml)"
	@echo "make test       install, build and run every test"
	@echo "make check      fmt check, lint, typecheck, then the tests"
	@echo "make bench      writes/s, latency, failover and host replacement of local clusters (docs/performance.md)"
	@echo "make sim SEEDS=1000 [NODES=5] [PROFILE=replace]   run the deterministic simulator over many seeds"
	@echo "make chaos DURATION=10m SEED=42 [NODES=3|5]   chaos run of a real cluster (history in chaos-results/)"
	@echo "make build      dist/keel, a single executable"
	@echo "make release    dist/release: keel for linux-x64, linux-x64-baseline, linux-arm64, and SHA256SUMS"
	@echo "make example-ledger   dist/keel-ledger: keel with the ledger service (examples/ledger)"

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

install: node_modules/.installed

# What a binary says it is (keel version): the commit, whether src/ or the package files had
# uncommitted changes, and the build time (SOURCE_DATE_EPOCH when set, for reproducible
# builds), baked in with bun build --define (src/version.ts).
BUILD_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_DIRTY  := $(shell [ -n "$$(git status --porcelain -- src package.json package-lock.json 2>/dev/null)" ] && echo true || echo false)
BUILD_TIME    = $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
BUILD_DEFINES = --define 'KEEL_BUILD_COMMIT="$(BUILD_COMMIT)"' --define 'KEEL_BUILD_DIRTY="$(BUILD_DIRTY)"' \
                --define 'KEEL_BUILD_TIME="$(BUILD_TIME)"'

# Rewritten only when the commit (or the dirty flag) changed, so a new commit rebuilds the
# binaries and nothing else does.
dist/.build-commit: FORCE
	@mkdir -p dist
	@[ "$$(cat $@ 2>/dev/null)" = "$(BUILD_COMMIT) $(BUILD_DIRTY)" ] || echo "$(BUILD_COMMIT) $(BUILD_DIRTY)" > $@

dist/keel: node_modules/.installed $(SRC) dist/.build-commit
	@mkdir -p dist
	$(BUN) build --compile --minify-syntax --sourcemap $(BUILD_DEFINES) src/main.ts --outfile dist/keel
	@./dist/keel --version

build: dist/keel

# The downloadable binaries and SHA256SUMS (scripts/release.sh says how each is made).
release: node_modules/.installed
	KEEL_BUILD_COMMIT='$(BUILD_COMMIT)' KEEL_BUILD_DIRTY='$(BUILD_DIRTY)' KEEL_BUILD_TIME='$(BUILD_TIME)' \
	  bash scripts/release.sh

# keel as a library: the ledger example's own binary, the whole keel CLI around its service.
LEDGER_SRC := $(shell find examples/ledger -name '*.ts' 2>/dev/null)
dist/keel-ledger: node_modules/.installed $(SRC) $(LEDGER_SRC) dist/.build-commit
	@mkdir -p dist
	$(BUN) build --compile --minify-syntax --sourcemap $(BUILD_DEFINES) examples/ledger/main.ts --outfile dist/keel-ledger
	@./dist/keel-ledger --version

example-ledger: dist/keel-ledger

run: dist/keel
	$(BUN) scripts/cluster.ts --config examples/local-3.yaml

# The dashboard test drives Debian's Chromium, and the operations pack's test
# (test/ops/pack.test.ts) runs promtool (Debian's prometheus) and systemd-analyze: installed
# here when we can (root with apt-get, as in CI); without them those tests are skipped and
# say why.
TEST_PACKAGES = $(if $(wildcard /usr/bin/chromium),,chromium) \
                $(if $(shell command -v promtool),,prometheus) \
                $(if $(shell command -v systemd-analyze),,systemd)
test: dist/keel dist/keel-ledger
	@if [ -n "$(strip $(TEST_PACKAGES))" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_PACKAGES); fi
	@[ -x /usr/bin/chromium ] || echo "note: /usr/bin/chromium not found: the dashboard browser test is skipped (apt-get install chromium)"
	@command -v promtool >/dev/null || echo "note: promtool not found: the Prometheus checks of test/ops are skipped (apt-get install prometheus)"
	KEEL_SKIP_BROWSER=$$([ -x /usr/bin/chromium ] || echo 1) $(BUN) test --timeout 120000

test-fast: node_modules/.installed
	$(BUN) test test/consensus test/config test/lib test/service test/http test/tidy test/transport

fmt: node_modules/.installed
	$(DENO) fmt

fmt-check: node_modules/.installed
	$(DENO) fmt --check

lint: node_modules/.installed
	$(DENO) lint

typecheck: node_modules/.installed
	$(TSC) --noEmit -p .

check: fmt-check lint typecheck test

bench: dist/keel
	$(BUN) scripts/bench.ts $(BENCH_ARGS)

SEEDS ?= 1000
NODES ?= 3
PROFILE ?= chaos
sim: node_modules/.installed
	$(BUN) scripts/sim.ts --seeds=$(SEEDS) --nodes=$(NODES) --profile=$(PROFILE)

# make sim-long [SEEDS=20000] [FIRST=7000001] [WORKERS=N] [PROFILES=a,b]: every profile at
# 3 and 5 nodes over one worker per core; a summary line per profile and node count.
.PHONY: sim-long sim-digest
FIRST ?= 7000001
SIM_OPTIONS = $(if $(WORKERS),--workers=$(WORKERS)) $(if $(PROFILES),--profiles=$(PROFILES))
sim-long: node_modules/.installed
	$(BUN) scripts/sim_long.ts --seeds=$(if $(filter file,$(origin SEEDS)),20000,$(SEEDS)) \
	  --seed=$(FIRST) $(SIM_OPTIONS)

# make sim-digest [OUT=FILE | COMPARE=FILE] [SEEDS=5000] [FIRST=1]: each seed's trace digest
# written to OUT (.tmp/sim-digests.txt), or compared with COMPARE (written earlier).
sim-digest: node_modules/.installed
	@mkdir -p .tmp
	$(BUN) scripts/sim_long.ts --seeds=$(if $(filter file,$(origin SEEDS)),5000,$(SEEDS)) \
	  --seed=$(if $(filter file,$(origin FIRST)),1,$(FIRST)) $(SIM_OPTIONS) \
	  $(if $(COMPARE),--digest-compare=$(COMPARE),--digest-out=$(or $(OUT),.tmp/sim-digests.txt))

DURATION ?= 60s
SEED ?= 1
chaos: dist/keel
	$(BUN) scripts/chaos.ts --duration=$(DURATION) --seed=$(SEED) --nodes=$(NODES)

clean:
	rm -rf dist data .tmp bench-results chaos-results
