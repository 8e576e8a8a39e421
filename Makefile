# cowguard: `make demo` and `make test` work on a fresh Debian (12, 13, forky) with make and git;
# each installs what is missing.
SHELL := /bin/bash
# The Python uWSGI's python3 plugin links, asked of tools/uwsgi-python-config (also used by CMake and
# uwsgiplugin.py). Expanded when a recipe runs, after `deps` has installed uWSGI and python3-dev.
PY = $(or $(shell tools/uwsgi-python-config --python),$(error tools/uwsgi-python-config found no Python))
BUILD ?= build
PLUGIN := $(BUILD)/cowguard_plugin.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Build and test: uwsgi-dev is uWSGI's plugin SDK (the -dev packages of every feature uwsgi.h includes:
# libcap, pcre, ssl, uuid, zlib) and brings the uwsgi binary of its release (uwsgi-core on 12 and 13,
# uwsgi on forky, where uwsgi-core is only a transitional package); python3-dev is the -dev of
# Debian's default Python, the one the python3 plugin links. procps: the tests read worker pids
# with ps. wrk: load in tests and benchmarks. prometheus, graphite-carbon and python3-whisper: the
# fleet tests start a real Prometheus server and a real carbon-cache.
# `make build` needs BUILD_PKGS only; the tests need all of PKGS.
BUILD_PKGS := uwsgi-dev uwsgi-plugin-python3 libjansson-dev check pkg-config cmake g++ make python3-dev
PKGS := $(BUILD_PKGS) python3-pytest python3-django procps wrk \
        prometheus graphite-carbon python3-whisper
# The benchmarks (make demo, make bench*): load, pids, the plots, the bench's Django project and
# graphite-web, the third-party Django project it serves.
BENCH_PKGS := procps wrk python3-django python3-matplotlib graphite-web

# $(call install_missing,PACKAGES): apt-get install those not installed (idempotent, quiet when none).
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "[deps] installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

.PHONY: deps deps-build deps-bench build build-uwsgi unit integration test demo bench bench-quick bench-here bench-extra install clean

deps:
	$(call install_missing,$(PKGS))

deps-build:
	$(call install_missing,$(BUILD_PKGS))

deps-bench: deps-build
	$(call install_missing,$(BENCH_PKGS))

# Warnings are errors under `make test` (and so in CI): WERROR=ON there, OFF for a plain build.
WERROR ?= OFF
test: WERROR = ON

build: deps-build
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOWGUARD_WERROR=$(WERROR) >/dev/null
	@cmake --build $(BUILD) -j2

# The other supported build: uWSGI's own plugin builder, writing cowguard_plugin.so into the current
# directory (run it from anywhere: `uwsgi --build-plugin /path/to/cowguard`).
build-uwsgi: deps
	uwsgi --build-plugin $(CURDIR)

unit: build
	cd $(BUILD) && ctest --output-on-failure

integration: build deps
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) -m pytest -q -p no:cacheprovider tests/integration

test: unit integration test-sanitize fuzz

demo: build deps-bench
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/demo.py

# The benchmark on this system and in each Debian chroot of BENCH_CHROOTS (one Python each; root),
# merged into bench/results/<stamp>/results.json: about 30 minutes full, a few minutes per system quick.
BENCH_CHROOTS ?= $(wildcard /work/chroots/trixie /work/chroots/forky)
bench: build deps-bench
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/all.py --full $(addprefix --chroot ,$(BENCH_CHROOTS))

bench-quick: build deps-bench
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/all.py --quick $(addprefix --chroot ,$(BENCH_CHROOTS))

# This system only (what bench/all.py runs in each chroot): MODE=quick|full, OUT=results directory.
MODE ?= full
bench-here: build deps-bench
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/run.py --$(MODE) $(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# What the stats and the Prometheus endpoint cost the master (64 workers) and what Django warmup and trim do: about 7 minutes.
bench-extra: build deps-bench
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/stats_cost.py --workers 64 --seconds 30
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/prometheus_cost.py --workers 64 --seconds 30 --rounds 3
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/warmup_trim.py --rounds 3

# uWSGI's plugin directory unless given (make install PLUGIN_DIR=...).
PLUGIN_DIR ?= $(shell tools/uwsgi-python-config --plugin-dir)
install: build
	install -m 0644 $(PLUGIN) $(PLUGIN_DIR)/cowguard_plugin.so
	@echo "installed $(PLUGIN_DIR)/cowguard_plugin.so: load it with 'plugins = python3,cowguard'"

# The README's commands on a fresh debootstrapped Debian (root; see .ci/test-debian):
# `make test-debian SUITE=bookworm` runs make demo and make test, trixie and forky make unit integration.
SUITE ?= bookworm
.PHONY: test-debian
test-debian:
	.ci/test-debian $(SUITE)

clean:
	rm -rf $(BUILD) cowguard_plugin.so .uwsgi_plugins_builder

# ---- Reliability (issue #9): sanitizers and fuzzing. `make test` runs both. ----------------------
SAN_BUILD := $(BUILD)/sanitize
FUZZ_PKGS := clang libclang-rt-dev
FUZZ_SECONDS ?= 30

.PHONY: test-sanitize fuzz fuzz-deps

# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, unforked (CK_FORK=no) so
# LeakSanitizer sees every test's memory; then uWSGI with the sanitized plugin (tests/sanitize/).
test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCOWGUARD_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOWGUARD_WERROR=$(WERROR) >/dev/null
	@cmake --build $(SAN_BUILD) -j2
	cd $(SAN_BUILD) && CK_FORK=no ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure
	COWGUARD_PLUGIN=$(abspath $(SAN_BUILD)/cowguard_plugin.so) $(PY) -m pytest -q -p no:cacheprovider tests/sanitize

# libFuzzer needs clang and its runtime (libclang-rt-dev: the one of Debian's default clang).
fuzz-deps:
	$(call install_missing,$(FUZZ_PKGS))

# Replays every kept crash (tests/fuzz/regressions/), then fuzzes each target for FUZZ_SECONDS.
fuzz: deps fuzz-deps
	FUZZ_BUILD=$(abspath $(BUILD)/fuzz) tests/fuzz/run.sh $(FUZZ_SECONDS)
