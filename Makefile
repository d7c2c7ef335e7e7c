# safekeeper: build, test, demo and benchmark entry points.
# `make test` is what CI runs (.ci/run); it needs PostgreSQL's server
# binaries (initdb, postgres, pg_ctl, pg_basebackup, pg_receivewal, psql).

GO       ?= go
BIN      ?= bin/safekeeper
FUZZTIME ?= 5s
PKGS     := ./...

# Test-only programs, built from pinned sources into .tools/bin (git-ignored).
# versitygw is the S3-compatible server internal/s3test runs; keep the version
# equal to s3test.VersityGWVersion (a test checks).
VERSITYGW_VERSION ?= v1.8.0
# etcd is the server internal/etcdtest runs, built from the module tools/etcd
# (which pins go.etcd.io/etcd/server/v3) so that the server's dependencies stay
# out of go.mod; keep ETCD_VERSION equal to etcdtest.EtcdVersion and to the
# version tools/etcd/go.mod requires (a test checks both).
ETCD_VERSION ?= v3.7.3
TOOLS_BIN := $(CURDIR)/.tools/bin
VERSITYGW := $(TOOLS_BIN)/versitygw
ETCD      := $(TOOLS_BIN)/etcd

.PHONY: all build test check vet fmt-check unit fuzz-short demo bench clean tools test-memtier-off

all: build

# -buildvcs=true: the revision goes into the binary (safekeeper version,
# safekeeper_build_info) even where GOFLAGS turns VCS stamping off.
build:
	$(GO) build -buildvcs=true -o $(BIN) ./cmd/safekeeper

## test: everything CI checks: vet, gofmt, the whole suite with -race, the
## streaming tests again with the memory tier off, and each fuzz target for
## $(FUZZTIME) on top of its committed corpus.
test: check unit test-memtier-off fuzz-short

check: vet fmt-check

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## tools: build the test-only programs when missing or of another version.
tools:
	@if ! $(GO) version -m $(VERSITYGW) 2>/dev/null | grep -Eq '^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+$(VERSITYGW_VERSION)[[:space:]]'; then \
	  echo "building versitygw $(VERSITYGW_VERSION) into $(TOOLS_BIN)"; \
	  GOBIN=$(TOOLS_BIN) GOFLAGS= GOWORK=off $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); \
	fi
	@if ! $(GO) version -m $(ETCD) 2>/dev/null | grep -Eq '^[[:space:]]+dep[[:space:]]+go\.etcd\.io/etcd/server/v3[[:space:]]+$(ETCD_VERSION)([[:space:]]|$$)'; then \
	  echo "building etcd $(ETCD_VERSION) from tools/etcd into $(TOOLS_BIN)"; \
	  cd tools/etcd && GOFLAGS= GOWORK=off $(GO) build -buildvcs=false -o $(ETCD) .; \
	fi

unit: tools
	$(GO) test -race -count=1 -timeout 45m $(PKGS)
	@# The allocation tests again without the race detector, under which
	@# sync.Pool drops items on purpose (testenv.RaceEnabled).
	$(GO) test -count=1 -run 'Alloc' ./pkg/...

## test-memtier-off: the streaming, standby, receivewal and crash tests with
## the memory tier off (--wal-memory-size 0); `make unit` runs them with it on.
MEMTIER_TESTS ?= Receivewal|Stream|Standby|Crash|Kill|TimelineSwitch|Slot
test-memtier-off:
	SAFEKEEPER_TEST_WAL_MEMORY_SIZE=0 $(GO) test -race -count=1 -timeout 30m -run '$(MEMTIER_TESTS)' ./tests

fuzz-short:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./scripts/fuzz-short.sh

## demo: a throwaway PostgreSQL primary, a safekeeper on it, some WAL,
## streamed back with pg_receivewal from the safekeeper.
demo: build
	./scripts/demo.sh

## bench: issue 10's benchmark suite, one run alternating the safekeeper and
## its reference on the same WAL: streaming (BenchmarkStream, P1-P4: server
## CPU per GiB, one-stream MB/s against loopback TCP, 8 and 64 streams,
## pg_receivewal catch-up), XLogData message size (BenchmarkMessageSize: 128kB
## against 1MB with pg_receivewal and a standby), 1000 idle consumers
## (BenchmarkIdleConsumers, P7),
## commit latency, sync-standby TPS, ingest catch-up and archive lag
## (BenchmarkCommit, BenchmarkIngestCatchup: P5, P6, P8, P9), then the archive
## and many-timeline benchmarks. Each scenario saves its samples into
## $(BENCH_OUT) (its old results removed first); the renderer turns them into
## $(BENCH_DOC) with PNG plots beside it, also after a failed benchmark, and
## the table is printed. BENCH_GIB, BENCH_ROUNDS, BENCH_CONSUMERS and the
## other BENCH_* variables scale it (README).
BENCH_OUT ?= $(CURDIR)/.cache/bench
BENCH_DOC ?= docs/benchmarks.md
BENCH_RE  ?= BenchmarkStream|BenchmarkMessageSize|BenchmarkIdleConsumers|BenchmarkCommit|BenchmarkIngestCatchup|BenchmarkArchive|BenchmarkManyTimelines
bench:
	mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.json
	status=0; \
	BENCH_OUT=$(BENCH_OUT) $(GO) test -run '^$$' -bench '$(BENCH_RE)' -benchtime 1x -timeout 90m -v ./tests/ || status=$$?; \
	$(GO) run ./internal/benchreport/cmd/render -in $(BENCH_OUT) -out $(BENCH_DOC) || exit $$?; \
	echo; sed -n '/^| id /,/^$$/p' $(BENCH_DOC); \
	exit $$status

clean:
	rm -rf bin demo-data
