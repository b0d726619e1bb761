# cairn build, test and benchmark entry points. `make test` is the one
# command CI runs (through .ci/run).
GO      ?= go
BIN     := bin/cairn
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build deps test unit lint bench demo fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cairn

# Everything the project tests: lint, unit and integration tests, and a
# 40-second fuzz run of every decoder (make fuzz runs a minute each), which
# keeps the whole under 15 minutes on two cores.
# What the tests need: PostgreSQL 15, redis-server, the MinIO server (built
# once into ~/.cache/cairn/bin), Go modules. Idempotent and quick when present.
deps:
	./scripts/install-deps.sh

test: deps lint
	$(GO) test -count=1 -timeout 20m ./...
	./scripts/fuzz.sh 40s

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Go micro-benchmarks, then cairn against restic (scripts/bench.sh; pass
# options as BENCH_ARGS, e.g. make bench BENCH_ARGS=-quick).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2x ./index ./repo
	./scripts/bench.sh $(BENCH_ARGS)

fuzz:
	./scripts/fuzz.sh 60s

demo: build
	./scripts/demo.sh

clean:
	rm -rf bin
