# Thin wrappers over meson/ninja. Run as root: `make test` and `make demo`
# install the Debian packages they need first.
BUILD ?= build

.PHONY: all deps test test-quick test-sanitize demo bench install clean

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

install: all
	meson install -C $(BUILD)

clean:
	rm -rf build build-asan build-tsan build*.log
