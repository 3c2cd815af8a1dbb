# Thin wrappers over meson/ninja. Run as root: `make test` and `make demo`
# install the Debian packages they need first.
BUILD ?= build

.PHONY: all deps test test-quick test-sanitize demo bench fuzz install clean

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	meson setup $(BUILD)

deps:
	scripts/install-deps.sh

# Every test: normal build, then the library under ASan+UBSan and TSan.
test: deps
	scripts/run-tests.sh

# The normal build only.
test-quick: deps
	LS_SKIP_SANITIZERS=1 scripts/run-tests.sh

demo: deps all
	scripts/demo.sh

bench: all
	scripts/install-deps.sh --bench
	bench/run-all.sh

# The reader's libFuzzer target for FUZZ_SECONDS (the suite runs 45 s),
# its corpus kept in $(BUILD)/fuzz-corpus between runs, then the
# truncation/bit-flip sweep with the CLI run on every damaged copy.
# Report: tests/fuzz/report.md.
FUZZ_SECONDS ?= 600
fuzz: deps all
	mkdir -p $(BUILD)/fuzz-corpus
	python3 tests/fuzz/run_fuzz.py $(BUILD)/tests/fuzz/fuzz_reader \
		tests/fuzz/corpus tests/fuzz/regress \
		--seconds $(FUZZ_SECONDS) --corpus $(BUILD)/fuzz-corpus
	$(BUILD)/tests/format/sweep $(BUILD)/cli/livesnap \
		tests/fuzz/corpus/file-one-page --cli-stride 1 --flips 5000

install: all
	meson install -C $(BUILD)

clean:
	rm -rf build build-asan build-tsan build-clang build*.log
