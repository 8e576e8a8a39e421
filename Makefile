# cowguard: `make demo` and `make test` work on a fresh Debian 12 machine; each installs what is missing.
SHELL := /bin/bash
PY := /usr/bin/python3
BUILD ?= build
PLUGIN := $(BUILD)/cowguard_plugin.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PLUGIN_DIR := $(shell uwsgi --cflags 2>/dev/null | sed -n 's/.*-DUWSGI_PLUGIN_DIR="\\"\([^\\]*\)\\"".*/\1/p')
PKGS := uwsgi-core uwsgi-plugin-python3 uwsgi-src libjansson-dev check pkg-config cmake g++ make \
        python3-dev python3.11-dev python3-pytest python3-django python3-matplotlib wrk \
        prometheus graphite-carbon python3-whisper

.PHONY: deps build build-uwsgi unit integration test demo bench bench-extra bench-quick install clean

deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "[deps] installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j2

# The other supported build: uWSGI's own plugin builder, writing ./cowguard_plugin.so.
build-uwsgi: deps
	uwsgi --build-plugin .

unit: build
	cd $(BUILD) && ctest --output-on-failure

integration: build
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) -m pytest -q -p no:cacheprovider tests/integration

test: unit integration test-sanitize fuzz

demo: build
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/demo.py

bench: build
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/run.py --full

# What the stats and the Prometheus endpoint cost the master (64 workers) and what Django warmup and trim do: about 7 minutes.
bench-extra: build
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/stats_cost.py --workers 64 --seconds 30
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/prometheus_cost.py --workers 64 --seconds 30 --rounds 3
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/warmup_trim.py --rounds 3

bench-quick: build
	COWGUARD_PLUGIN=$(abspath $(PLUGIN)) $(PY) bench/run.py --quick

install: build
	install -m 0644 $(PLUGIN) $(PLUGIN_DIR)/cowguard_plugin.so
	@echo "installed $(PLUGIN_DIR)/cowguard_plugin.so: load it with 'plugins = python3,cowguard'"

clean:
	rm -rf $(BUILD) cowguard_plugin.so .uwsgi_plugins_builder

# ---- Reliability (issue #9): sanitizers and fuzzing. `make test` runs both. ----------------------
SAN_BUILD := $(BUILD)/sanitize
FUZZ_PKGS := clang libclang-rt-14-dev
FUZZ_SECONDS ?= 30

.PHONY: test-sanitize fuzz fuzz-deps

# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, unforked (CK_FORK=no) so
# LeakSanitizer sees every test's memory; then uWSGI with the sanitized plugin (tests/sanitize/).
test-sanitize: deps
	@cmake -S . -B $(SAN_BUILD) -DCOWGUARD_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(SAN_BUILD) -j2
	cd $(SAN_BUILD) && CK_FORK=no ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure
	COWGUARD_PLUGIN=$(abspath $(SAN_BUILD)/cowguard_plugin.so) $(PY) -m pytest -q -p no:cacheprovider tests/sanitize

# libFuzzer needs clang and its runtime (libclang-rt-14-dev on Debian 12).
fuzz-deps:
	@missing=""; for p in $(FUZZ_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "[fuzz-deps] installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Replays every kept crash (tests/fuzz/regressions/), then fuzzes each target for FUZZ_SECONDS.
fuzz: deps fuzz-deps
	FUZZ_BUILD=$(abspath $(BUILD)/fuzz) tests/fuzz/run.sh $(FUZZ_SECONDS)
