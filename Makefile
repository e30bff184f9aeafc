# pyshrink: build, test, bench, demo, lint.
CARGO ?= cargo
PYTHON ?= $(shell command -v python3)
PYSHRINK := target/release/pyshrink

.PHONY: build test bench demo lint fmt deps fuzz

build:
	$(CARGO) build --release

# Tools the tests use that a fresh Debian machine lacks (root only; a no-op when present).
deps:
	@tests/deps.sh

test: deps
	HADOLINT=$(CURDIR)/target/tools/bin/hadolint $(CARGO) test --workspace --release -- --test-threads=2

# Bundles hello and runs it (in an empty root too, with bubblewrap, writable and read-only),
# then bundles mountains and queries it once.
demo: build
	mkdir -p dist
	$(PYSHRINK) bundle examples/hello/app.py --python $(PYTHON) -o dist/hello
	./dist/hello "from a single file" --exit=0
	@if command -v bwrap >/dev/null; then \
	  root=$$(mktemp -d); mkdir $$root/proc $$root/dev; cp dist/hello $$root/app; \
	  echo "in an empty root (only /app, /proc, /dev):"; \
	  bwrap --bind $$root / --proc /proc --dev /dev --unshare-pid --clearenv /app "FROM scratch"; \
	  echo "read-only, nothing writable (runs from memory):"; \
	  bwrap --ro-bind $$root / --proc /proc --dev /dev --unshare-pid --clearenv /app "read-only"; \
	  rm -rf $$root; fi
	$(PYSHRINK) bundle examples/mountains/app.py --python $(PYTHON) -o dist/mountains
	@PORT=18080 ./dist/mountains & pid=$$!; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do curl -fsS localhost:18080/ 2>/dev/null && break; sleep 0.5; done; \
	  echo; kill -TERM $$pid; wait $$pid; echo "mountains exited with $$?"

bench: build deps
	tests/bench.sh

# Fuzz the bundle format decoders (seconds per target; default 30).
fuzz:
	tests/fuzz.sh $(or $(SECONDS),30)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p pyshrink-stub --lib --features launcher -- -D warnings

fmt:
	$(CARGO) fmt --all
