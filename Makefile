# The README's two commands:
#   make demo   installs what is missing, builds, and runs the main job (parallel inference)
#   make test   installs what is missing, builds, and runs every test
# Other targets: make python-test (the Python package's pytest suite, also part of make test),
# make sanitize (ASan+UBSan and TSan builds on the unit, stress, conformance and
# fuzz-regression tests), make fuzz (libFuzzer, FUZZ_SECONDS per target), make bench,
# make install PREFIX=..., make format, make clean.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
DEBIAN_PACKAGES := cmake make gcc g++ pkg-config libopenblas-dev libcjson-dev libcmocka-dev spin
FUZZ_PACKAGES := clang libclang-rt-14-dev
PYTHON_PACKAGES := python3 python3-venv python3-dev
# The memory viewer's browser test (tests/cli/viewer.sh); it skips without them, except in CI
# (SP_REQUIRE_BROWSER=1).
VIEWER_PACKAGES := chromium python3
FORMAT_PACKAGES := clang-format
FUZZ_SECONDS ?= 60

.PHONY: all deps configure build demo test python-test sanitize asan tsan fuzz bench install format format-check clean

all: build

deps:
	@bash scripts/install-deps.sh $(DEBIAN_PACKAGES)

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)

test: build
	@bash scripts/install-deps.sh $(VIEWER_PACKAGES) || echo "note: the browser test (cli_viewer) will be skipped"
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600
	@$(MAKE) --no-print-directory python-test

# The Python package: a venv in $(BUILD) (numpy, pytest, scikit-build-core from PyPI; a
# "skipped: ..." line when PyPI cannot be reached), `pip install .` from the checkout, pytest.
python-test:
	@bash scripts/install-deps.sh $(PYTHON_PACKAGES) || echo "python-test: cannot install $(PYTHON_PACKAGES); the script skips what it cannot run"
	JOBS=$(JOBS) bash scripts/python-test.sh $(BUILD)

# Sanitizer builds run the unit, stress, conformance and fuzz-regression tests.
asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSP_DEBUG_LEVEL=2 -DSP_SANITIZE=address,undefined -DSP_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && SP_FUZZ_RUNS=20000 ctest --output-on-failure -j $(JOBS) -L 'unit|internal|stress|conformance|fuzz'

tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSP_DEBUG_LEVEL=1 -DSP_SANITIZE=thread -DSP_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --output-on-failure -j $(JOBS) -L 'unit|internal|stress|conformance|fuzz'

sanitize: asan tsan

# libFuzzer with ASan+UBSan (clang), each target for FUZZ_SECONDS from a copy of its corpus.
fuzz: deps
	@bash scripts/install-deps.sh $(FUZZ_PACKAGES)
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSP_FUZZ=ON -DSP_DEBUG_LEVEL=2 -DSP_BENCH=OFF -DSP_CUDA=OFF
	cmake --build build-fuzz -j $(JOBS) --target libfuzzer_safetensors libfuzzer_alloc_ops libfuzzer_tokenizer libfuzzer_model_desc
	@for t in safetensors alloc_ops tokenizer model_desc; do \
	  rm -rf build-fuzz/corpus-$$t && cp -r tests/fuzz/corpus/$$t build-fuzz/corpus-$$t; \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
	  if ! build-fuzz/tests/libfuzzer_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      build-fuzz/corpus-$$t > build-fuzz/fuzz-$$t.log 2>&1; then \
	    tail -n 60 build-fuzz/fuzz-$$t.log; echo "fuzz $$t: FAILED (input saved as crash-* here)"; exit 1; \
	  fi; \
	  grep -E "^stat::number_of_executed_units|^Done" build-fuzz/fuzz-$$t.log; \
	done

bench: build
	@for b in $(BUILD)/bench/*; do [ -x "$$b" ] && [ -f "$$b" ] && "$$b"; done

install: build
	cmake --install $(BUILD) --prefix $(or $(PREFIX),/usr/local)

format:
	@bash scripts/install-deps.sh $(FORMAT_PACKAGES)
	bash scripts/format.sh

# The house style (.clang-format) holds for every C, C++ and CUDA file (CI runs this).
format-check:
	@bash scripts/install-deps.sh $(FORMAT_PACKAGES)
	bash scripts/format.sh --check

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
