# A thin wrapper over CMake. `make` builds (Release) into build/, `make test`
# builds and runs the test suite, `make run` generates text with the default
# model, `make asan` builds with AddressSanitizer + UBSan into build-asan/ and
# runs the whole suite there, `make fuzz` runs the libFuzzer targets (clang).

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
PROMPT     ?= Once upon a time
FUZZ_SECONDS ?= 30

.PHONY: all build test run asan fuzz clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

run: build
	@models/fetch.sh --default >&2
	@$(BUILD)/bin/gloas -p "$(PROMPT)" -n 256

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLOAS_SANITIZE=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

fuzz:
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DGLOAS_FUZZ=ON -DGLOAS_SANITIZE=ON -DGLOAS_TESTS=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz-gguf fuzz-tokenizer
	@for f in gguf tokenizer; do \
		mkdir -p build-fuzz/corpus-$$f && \
		build-fuzz/tests/fuzz-$$f -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$$f tests/fuzz/seeds/fuzz-$$f || exit 1; \
	done

clean:
	rm -rf $(BUILD) build-asan build-fuzz
