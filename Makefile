# tokenhub: `make run` serves with embedded defaults, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build tokenhub run image test lint fuzz bench bench-full deps clean

all: build

tokenhub:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub ./cmd/tokenhub

build: tokenhub
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub-mock ./cmd/tokenhub-mock
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tokenhub-bench ./cmd/tokenhub-bench

# Embedded defaults: 127.0.0.1:8080, ./data, the built-in mock model.
run: tokenhub
	$(BIN)/tokenhub

# The container image (cmd/tokenhub/Containerfile): the binary built static
# (CGO_ENABLED=0, for scratch), the host's CA bundle and a passwd/group file,
# laid out in IMAGE_CONTEXT, then built with podman, or docker when podman is
# not installed. Nothing is pulled: the image is FROM scratch.
IMAGE            ?= tokenhub:latest
IMAGE_CONTEXT    ?= $(BIN)/image
CONTAINER_ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
CA_BUNDLE        ?= /etc/ssl/certs/ca-certificates.crt
IMAGE_BUILD_FLAGS ?=
image:
	@[ -n "$(CONTAINER_ENGINE)" ] || { echo "make image: neither podman nor docker is installed (make deps installs podman)"; exit 1; }
	rm -rf $(IMAGE_CONTEXT)
	mkdir -p $(IMAGE_CONTEXT)/volume/data
	chmod 0700 $(IMAGE_CONTEXT)/volume/data
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_CONTEXT)/tokenhub ./cmd/tokenhub
	install -m 0644 $(CA_BUNDLE) $(IMAGE_CONTEXT)/ca-certificates.crt
	install -m 0644 cmd/tokenhub/image/passwd cmd/tokenhub/image/group $(IMAGE_CONTEXT)/
	$(CONTAINER_ENGINE) build -f cmd/tokenhub/Containerfile -t $(IMAGE) $(IMAGE_BUILD_FLAGS) \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg SOURCE=https://$$($(GO) list -m) \
	  $(IMAGE_CONTEXT)

# Every test: the linters, the suite with the race detector, then the
# allocation tests (all named TestAllocs*; the race detector allocates, so
# they are built only without it). The timeout guards against a hang, not
# speed: proxy's suite takes about 5 minutes alone and several times that on
# a machine busy with another suite, past go test's default of 10.
test: lint
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -count=1 -run '^TestAllocs' ./...

# gofmt, go vet, then golangci-lint with .golangci.yml (built once into bin/
# from the module proxy at the pinned version). It refuses to run beside
# another golangci-lint unless allowed: make test beside make test must pass.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
lint: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run --allow-parallel-runners ./...

$(GOLANGCI_LINT):
	mkdir -p $(BIN)
	GOBIN=$(abspath $(BIN)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint $@

# A short run of every fuzz target (found with go test -list), FUZZTIME each.
FUZZTIME ?= 15s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

# Throughput, latency and cost on loopback, in about two minutes: chat
# completions to the mock directly, through tokenhub and through nginx when
# installed, in a closed loop and then an open one at a fixed rate; streams'
# time to first byte; a rate limit refusing half the load; and, when
# valkey-server is installed, how fast a change on one node holds on another.
# The report is printed and written to bin/bench.md and bin/bench.json.
# BENCH_FLAGS adds tokenhub-bench flags, e.g. BENCH_FLAGS='-duration 2s'.
BENCH_FLAGS ?=
bench: build
	$(BIN)/tokenhub-bench -scenario quick -tokenhub $(BIN)/tokenhub \
	  -markdown $(BIN)/bench.md -json $(BIN)/bench.json $(BENCH_FLAGS)

# Every scenario (embeddings, whole streams, 100,000 keys, budgets, Valkey
# nodes, memory per open stream...) in about eight minutes, after the memory
# a million cached keys take (a Go test, as creating them over HTTP would take
# minutes). Written to bin/bench-full.md and bin/bench-full.json.
bench-full: build
	TOKENHUB_MEM_KEYS=1000000 $(GO) test -count=1 -run TestCachedKeyMemory -v ./keys
	$(BIN)/tokenhub-bench -scenario full -tokenhub $(BIN)/tokenhub \
	  -markdown $(BIN)/bench-full.md -json $(BIN)/bench-full.json $(BENCH_FLAGS)

deps:
	.ci/install-deps

clean:
	rm -rf $(BIN)
