# edgepbx — the two commands: `make run` and `make test`. Both install what
# they need (.ci/deps) and say what is missing when they cannot.
SHELL := /bin/bash
GO ?= go
BOARD ?= qemu-x86_64
GOTEST_TIMEOUT ?= 30m
E2E_TIMEOUT ?= 45m
# Packages whose tests boot QEMU run alone after the rest, so TCG guests do not
# compete with the race-detector build for the 2 CPUs.
E2E_PKGS := ./qemu/e2e/...

.PHONY: all deps build run dev test unit e2e lint bench fuzz clean

all: build

deps:
	@./.ci/deps

build: deps
	$(GO) build -o out/bin/edgepbx ./cmd/edgepbx
	out/bin/edgepbx build --board $(BOARD)

# Built first and then run directly (not `go run`), so Ctrl-C reaches only
# edgepbx, which turns it into a clean power-off and exits 0.
run: deps
	$(GO) build -o out/bin/edgepbx ./cmd/edgepbx
	out/bin/edgepbx run --board $(BOARD)

dev:
	@command -v $(GO) >/dev/null || { echo "edgepbx: Go is not installed"; exit 1; }
	$(GO) run ./cmd/edgepbxd --dev "$$(mktemp -d -t edgepbx-dev.XXXXXX)"

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout $(GOTEST_TIMEOUT) $$($(GO) list ./... | grep -v '/qemu/e2e')

e2e:
	$(GO) test -count=1 -p 1 -timeout $(E2E_TIMEOUT) $(E2E_PKGS)

test: deps lint unit e2e

bench:
	@EDGEPBX_EXTRA_PKGS="kamailio wrk rtpengine-daemon" ./.ci/deps
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
	  done; \
	done

clean:
	rm -rf out
