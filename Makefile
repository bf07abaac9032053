# edgepbx — the two commands: `make run` and `make test`. Both install what
# they need (.ci/deps: `run` only what building and booting an image needs,
# `test` everything the tests use) and say what is missing when they cannot.
SHELL := /bin/bash
GO ?= go
BOARD ?= qemu-x86_64
GOTEST_TIMEOUT ?= 30m
E2E_TIMEOUT ?= 75m
# Packages whose tests boot QEMU run alone after the rest, so TCG guests do not
# compete with the race-detector build for the 2 CPUs.
E2E_PKGS := ./qemu/e2e/...

.PHONY: all deps run-deps build run dev test unit e2e lint bench fuzz fuzz-smoke clean

all: build

deps:
	@./.ci/deps test

run-deps:
	@BOARD=$(BOARD) ./.ci/deps run

build: run-deps
	$(GO) build -o out/bin/edgepbx ./cmd/edgepbx
	out/bin/edgepbx build --board $(BOARD)

# Built first and then run directly (not `go run`), so Ctrl-C reaches only
# edgepbx, which turns it into a clean power-off and exits 0.
run: run-deps
	$(GO) build -o out/bin/edgepbx ./cmd/edgepbx
	out/bin/edgepbx run --board $(BOARD)

dev:
	@command -v $(GO) >/dev/null || { echo "edgepbx: Go is not installed"; exit 1; }
	$(GO) run ./cmd/edgepbxd --dev "$$(mktemp -d -t edgepbx-dev.XXXXXX)"

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Browser tests leave a screenshot of every admin page (1280 px and 390 px)
# in out/screenshots: CI's artefact, to look at without running anything.
unit:
	mkdir -p out/screenshots
	EDGEPBX_SCREENSHOTS=$(CURDIR)/out/screenshots $(GO) test -race -count=1 -timeout $(GOTEST_TIMEOUT) $$($(GO) list ./... | grep -v '/qemu/e2e')

e2e:
	$(GO) test -count=1 -p 1 -timeout $(E2E_TIMEOUT) $(E2E_PKGS)

test: deps lint unit fuzz-smoke e2e

bench:
	@EDGEPBX_EXTRA_PKGS="kamailio wrk rtpengine-daemon" ./.ci/deps
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

# Every Fuzz target in the repository for FUZZ_SMOKE_TIME each: a smoke run,
# not a campaign, so a target that breaks (or finds something at once) fails
# `make test` instead of rotting. Targets are found in the sources, so a new
# one is included without editing this file. The budget is a count of
# executions, not seconds: a time budget lets Go's fuzzing coordinator fail
# with "context deadline exceeded" when the deadline falls while a worker is
# busy on a loaded machine (no input found, nothing wrong with the target),
# which made the run flaky. Each package's instrumented test binary is built
# once (`go test -c -fuzz`) and run for each of its targets, from the
# package's directory and with go test's own corpus cache, as `go test -fuzz`
# would: one `go test -fuzz` per target relinked the binary every time, about
# 4-5 s of the 5-8 s a target took. A failure prints the target's output,
# including the input it wrote under testdata/fuzz.
FUZZ_SMOKE_TIME ?= 300x
fuzz-smoke:
	@start=$$(date +%s); n=0; bin=$$(mktemp -d); trap 'rm -rf "$$bin"' EXIT; \
	cache=$$($(GO) env GOCACHE)/fuzz; \
	for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  pkg=$$(cd $$d && $(GO) list .) || exit 1; \
	  $(GO) test -c -fuzz . -o "$$bin/fuzz.test" $$d || { echo "fuzz-smoke: $$d does not build"; exit 1; }; \
	  for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$d/*_test.go); do \
	    out=$$(cd $$d && "$$bin/fuzz.test" -test.run '^$$' -test.fuzz "^$$f$$" -test.fuzztime $(FUZZ_SMOKE_TIME) \
	      -test.fuzzcachedir "$$cache/$$pkg" -test.timeout 10m 2>&1) || \
	      { echo "$$out"; echo "fuzz-smoke: $$d $$f FAILED"; exit 1; }; \
	    n=$$((n+1)); \
	  done; \
	done; \
	echo "fuzz-smoke: $$n targets, $$(( $$(date +%s) - start )) s"

fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
	  done; \
	done

clean:
	rm -rf out
