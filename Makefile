# The two README commands: `make run` and `make test`. Both install what is
# missing (scripts/deps.sh) and build before doing their job.
BUILD        ?= build
REL          := $(BUILD)/release
ASAN         := $(BUILD)/asan
FUZZ         := $(BUILD)/fuzz
DEB          := $(BUILD)/deb
FUZZ_SECONDS ?= 8
PREFIX       ?= /usr/local
B            ?=
RUN_ARGS     ?=
REF          ?= v1.7.1
CMAKE_GEN    := -G Ninja

SOAK_SECONDS ?= 180

.PHONY: all deps build run test unit fuzz interop soak bench install deb clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(REL) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DTM2_INTEROP=OFF >/dev/null
	@cmake --build $(REL)

run: build
	@scripts/run.sh $(REL) $(RUN_ARGS)

# Sanitized unit + integration (+ interop when Go is present) tests, then every
# fuzz target for a short bounded time on its corpus.
test: unit fuzz

unit:
	@scripts/deps.sh --test
	@cmake -S . -B $(ASAN) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DTM2_SANITIZE=ON -DTM2_BENCH=OFF >/dev/null
	@cmake --build $(ASAN)
	@ctest --test-dir $(ASAN) --output-on-failure -j2

fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DTM2_FUZZ=ON -DTM2_TESTS=OFF -DTM2_BENCH=OFF -DTM2_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	@cmake --build $(FUZZ)
	@ctest --test-dir $(FUZZ) --output-on-failure -L fuzz

# The soak test at full length (make test runs it for 20 s): 32 node processes,
# one killed and one restarted every second, for SOAK_SECONDS.
soak:
	@scripts/deps.sh --test
	@cmake -S . -B $(ASAN) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DTM2_SANITIZE=ON -DTM2_BENCH=OFF >/dev/null
	@cmake --build $(ASAN)
	@TM2_SOAK_SECONDS=$(SOAK_SECONDS) ctest --test-dir $(ASAN) --output-on-failure -V -L soak

# Only the interop tests, against one gno release (REF=v1.7.1 or v1.2.0), in a
# sanitizer build of its own.
interop: deps
	@cmake -S . -B $(BUILD)/interop-$(REF) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Debug -DTM2_SANITIZE=ON \
	    -DTM2_BENCH=OFF -DTM2_INTEROP=ON -DTM2_INTEROP_REF=$(REF) >/dev/null
	@cmake --build $(BUILD)/interop-$(REF) --target interop
	@ctest --test-dir $(BUILD)/interop-$(REF) --output-on-failure -L interop -j2

bench: build
	@scripts/bench.sh $(REL) $(B)

install: build
	@cmake --install $(REL) --prefix $(PREFIX)

# The Debian package (CPack): program, libraries, headers, pkg-config file,
# CMake package and systemd units, installed under /usr.
deb: deps
	@scripts/deps.sh dpkg-dev file
	@cmake -S . -B $(DEB) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
	    -DTM2_SYSTEMD_UNITS=ON -DTM2_TESTS=OFF -DTM2_BENCH=OFF -DTM2_INTEROP=OFF >/dev/null
	@cmake --build $(DEB)
	@cd $(DEB) && cpack -G DEB
	@ls $(DEB)/*.deb

clean:
	rm -rf $(BUILD)
