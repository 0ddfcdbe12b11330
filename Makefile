# tokenhub: `make run` serves with embedded defaults, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build tokenhub run test lint fuzz bench deps clean

all: build

tokenhub:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub ./cmd/tokenhub

build: tokenhub
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub-mock ./cmd/tokenhub-mock
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub-bench ./cmd/tokenhub-bench

# Embedded defaults: 127.0.0.1:8080, ./data, the built-in mock model.
run: tokenhub
	$(BIN)/tokenhub

# Every test: formatting, vet, the suite with the race detector, then again
# without it for the allocation tests (they are skipped under -race).
test: lint
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# A short run of every fuzz target.
FUZZTIME ?= 15s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParseSecret -fuzztime=$(FUZZTIME) ./keys
	$(GO) test -run='^$$' -fuzz=FuzzRequestFields -fuzztime=$(FUZZTIME) ./proxy

# Throughput and latency: the mock directly, through tokenhub, and through
# nginx when installed, side by side on loopback; then streams (time to first
# byte, per-event overhead, memory per open stream).
# Then, when valkey-server is installed, how fast a change on one node holds
# on another (the multi-node promise is 5s).
bench: build
	$(BIN)/tokenhub-bench -tokenhub $(BIN)/tokenhub
	$(BIN)/tokenhub-bench -scenario streaming -tokenhub $(BIN)/tokenhub
	@if command -v valkey-server >/dev/null; then \
	  $(BIN)/tokenhub-bench -scenario propagation -tokenhub $(BIN)/tokenhub; \
	else echo "valkey-server not installed (make deps): skipping the propagation scenario"; fi

deps:
	.ci/install-deps

clean:
	rm -rf $(BIN)
