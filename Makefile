# hetvis: `make demo` runs the main job, `make test` the test suite. Both set up the machine first.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GPU ?= 0
CARGO ?= cargo
# Where `make demo` writes its runs (models, reports, index).
RUNS ?= runs

.PHONY: all setup build test demo lint fmt clean-setup bench-setup bench-train bench

all: build

setup:
	@GPU=$(GPU) scripts/setup.sh

build: setup
	$(CARGO) build --workspace --release

# End-to-end tests run the binaries as processes; `cargo test` alone builds only those of packages that have
# integration tests, so build them all first.
test: setup
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

demo: setup
	$(CARGO) build --workspace --release
	scripts/demo.sh "$(RUNS)"

# Benchmarks (not part of `make test`): criterion benches, and tch vs PyTorch eager training throughput.
bench-setup:
	@GPU=$(GPU) BENCH=1 scripts/setup.sh

bench-train: bench-setup
	$(CARGO) build --release -p hetvis-trainer -p hetvis-benches
	mkdir -p $(RUNS)/bench
	target/release/train-throughput --json $(RUNS)/bench/train-throughput.json

bench: setup
	$(CARGO) bench --workspace

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Removes the venv (libtorch, ONNX Runtime); the next target re-creates it.
clean-setup:
	rm -rf .venv
