# hetvis: `make demo` runs the main job, `make test` the test suite. Both set up the machine first.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GPU ?= 0
CARGO ?= cargo
# Where `make demo` writes its runs (models, reports, index).
RUNS ?= runs

.PHONY: all setup build test demo lint fmt clean-setup

all: build

setup:
	@GPU=$(GPU) scripts/setup.sh

build: setup
	$(CARGO) build --workspace --release

test: setup
	$(CARGO) test --workspace

demo: setup
	$(CARGO) build --workspace --release
	scripts/demo.sh "$(RUNS)"

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Removes the venv (libtorch, ONNX Runtime); the next target re-creates it.
clean-setup:
	rm -rf .venv
