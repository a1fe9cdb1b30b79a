# hetvis: `make demo` runs the main job, `make test` the test suite. Both set up the machine first.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GPU ?= 0
CARGO ?= cargo
# Where `make demo` writes its runs (models, reports, index).
RUNS ?= runs

.PHONY: all setup build test demo lint fmt clean-setup bench-setup bench-train bench bench-serve bench-photo fuzz

all: build

setup:
	@GPU=$(GPU) scripts/setup.sh

build: setup
	$(CARGO) build --workspace --release

# End-to-end tests run the binaries as processes; `cargo test` alone builds only those of packages that have
# integration tests, so build them all first. Test builds (and only they) carry the fault-injection points
# that the crash and timeout tests use (`hetvis_models::failpoint`).
TEST_FEATURES := --features hetvis-models/failpoints
# Tests against a real Milvus are marked `#[ignore]` (they need the server) and run here, against the Milvus
# standalone that scripts/milvus.sh starts on loopback and stops afterwards, also when they fail.
test: setup
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(CARGO) test --workspace $(TEST_FEATURES)
	scripts/milvus.sh run -- $(CARGO) test -p hetvis-milvus -p hetvis-tests $(TEST_FEATURES) -- --ignored

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

# Server load benchmark: hetvis-serve on loopback, throughput and p50/p99 latency at concurrency 1/8/32, query
# model vs paragon (gallery model) side by side, Fashion-MNIST test images against the train-split index (built
# here when missing, as `make demo` does). Override the paths, e.g. `make bench-serve SERVE_QUERY=runs/fm/...`,
# and pass load options with SERVE_LOAD_ARGS (`--requests 2000 --seconds 20 --server-arg=--workers=2`).
SERVE_GALLERY ?= $(RUNS)/fm/gallery/model.onnx
SERVE_QUERY ?= $(RUNS)/fm/tier-23x/mobilenetv2-bct/model.onnx
SERVE_INDEX ?= $(RUNS)/fm/index
SERVE_LOAD_ARGS ?=

bench-serve: setup
	$(CARGO) build --release -p hetvis-server -p hetvis-indexer -p hetvis-benches --bins
	[ -f "$(SERVE_INDEX)/manifest.json" ] || target/release/hetvis-index build --model "$(SERVE_GALLERY)" \
		--source fashion-mnist:train --out "$(SERVE_INDEX)"
	mkdir -p $(RUNS)/bench
	target/release/serve-load --index "$(SERVE_INDEX)" --query-model "$(SERVE_QUERY)" \
		--gallery-model "$(SERVE_GALLERY)" --json $(RUNS)/bench/serve-load.json $(SERVE_LOAD_ARGS)

# Serving benchmark at real photo sizes (not part of `make test`): 1 and 12 MP JPEGs against a ResNet-101
# gallery model and MobileNetV2 query models at 224 px (random weights), hetvis-serve vs the same work in
# process vs a Python service (PIL draft mode + onnxruntime + hnswlib, in its own venv), and ONNX Runtime
# settings. About 15 minutes; pass options with PHOTO_ARGS (`--phases http,python --seconds 20`).
PHOTO_ARGS ?=

bench-photo: setup
	@GPU=$(GPU) PHOTO_BENCH=1 scripts/setup.sh
	$(CARGO) build --release -p hetvis-server -p hetvis-benches --bins
	target/release/photo-serve --work $(RUNS)/bench/photo --json $(RUNS)/bench/photo-serve.json $(PHOTO_ARGS)

# Fuzzing (not part of `make test`): mutated inputs from the committed seed corpus (fuzz/corpus) through image
# decode + preprocess (no panic, no allocation above ImageLimits::peak_bytes) and through the server's multipart
# readers (no panic). Deterministic: FUZZ_SEED replays the same cases.
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 1
fuzz:
	$(CARGO) build --release -p hetvis-fuzz
	target/release/hetvis-fuzz run --target preprocess --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)
	target/release/hetvis-fuzz run --target multipart --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Removes the venv (libtorch, ONNX Runtime); the next target re-creates it.
clean-setup:
	rm -rf .venv
