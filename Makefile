# A thin wrapper over CMake. Every target first checks this machine's build
# dependencies (tools/setup-deps.sh: on Debian/Ubuntu it installs what is
# missing). `make` builds (Release) into build/, `make test` fetches the test
# models it can (models/fetch.sh --tests) and the server test's npm package
# (tests/server/install.sh), builds, runs the test suite and
# names the files any skipped test lacked, `make run` builds gloas alone and
# generates text with the default model (fetched if missing), `make asan`
# builds with AddressSanitizer + UBSan into build-asan/ and runs the whole
# suite there, `make fuzz` runs the libFuzzer targets (clang).

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
PROMPT     ?= Once upon a time
FUZZ_SECONDS ?= 30

.PHONY: all deps configure build test run asan fuzz clean

all: build

deps:
	@tools/setup-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: configure
	@models/fetch.sh --tests
	@tests/server/install.sh
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS); rc=$$?; \
		cd $(CURDIR) && tests/skipped-files.sh $(BUILD); exit $$rc

run: configure
	@cmake --build $(BUILD) -j $(JOBS) --target gloas
	@models/fetch.sh --default >&2
	@$(BUILD)/bin/gloas -p "$(PROMPT)" -n 256

asan: deps
	@models/fetch.sh --tests
	@tests/server/install.sh
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLOAS_SANITIZE=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS); rc=$$?; \
		cd $(CURDIR) && tests/skipped-files.sh build-asan; exit $$rc

# Every tests/fuzz/fuzz-<name>.cpp, each for FUZZ_SECONDS from its seeds
# (tests/fuzz/seeds/fuzz-<name>) into build-fuzz/corpus-<name>; a target
# that needs a missing model file exits 77 and is reported as skipped.
FUZZERS := $(patsubst tests/fuzz/%.cpp,%,$(sort $(wildcard tests/fuzz/fuzz-*.cpp)))

fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DGLOAS_FUZZ=ON -DGLOAS_SANITIZE=ON -DGLOAS_TESTS=ON -DGLOAS_CUDA=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target $(FUZZERS)
	@for f in $(FUZZERS); do \
		mkdir -p build-fuzz/corpus-$$f && \
		echo "== $$f ($(FUZZ_SECONDS) s)" && \
		build-fuzz/tests/$$f -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$$f tests/fuzz/seeds/$$f; rc=$$?; \
		if [ $$rc = 77 ]; then echo "$$f: skipped (a model file is missing)"; \
		elif [ $$rc != 0 ]; then exit 1; fi; \
	done

clean:
	rm -rf $(BUILD) build-asan build-fuzz
