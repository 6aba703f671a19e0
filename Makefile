# kvbm-shm - GNU make build. `make help` lists the targets.

CC ?= gcc
PREFIX ?= /usr/local
BUILD ?= build
OPT ?= -O2 -g
SAN ?=

VERSION := 0.1.0
SOVERSION := 0

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wformat=2 -Wvla
# -fno-semantic-interposition: calls between our own exported functions
# may be inlined (nobody interposes kvbm_* symbols)
CFLAGS_COMMON := -std=c11 $(OPT) $(WARN) $(SAN) -fPIC -fvisibility=hidden -fno-semantic-interposition \
	-Iinclude -MMD -MP
LDFLAGS_COMMON := $(SAN)

LIB_SRCS := $(wildcard shm/*.c) $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# the test flavour of the library has the failpoints compiled in
TLIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/tobj/%.o)
LIB_LIBS := $(shell pkg-config --libs libxxhash liburcu-bp liburcu-cds 2>/dev/null || \
	echo -lxxhash -lurcu-bp -lurcu-common -lurcu-cds) -lpthread

TOOLS := kvbm-shm-dump kvbm-pool kvbm-demo kvbm-hash kvbm-bench kvbm-replay
TOOL_COMMON_SRCS := tools/json.c tools/inspect.c tools/dump.c
TOOL_COMMON_OBJS := $(TOOL_COMMON_SRCS:%.c=$(BUILD)/obj/%.o)
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)
TOOL_LIBS := $(shell pkg-config --libs jemalloc 2>/dev/null || echo -ljemalloc) -lpthread

TEST_SRCS := $(filter-out tests/torture.c,$(wildcard tests/*.c))
TORTURE_BIN := $(BUILD)/tests/kvbm-torture
DURATION ?= 60
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/tobj/%.o)
TEST_BIN := $(BUILD)/tests/check_kvbm
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

STATIC_LIB := $(BUILD)/lib/libkvbm.a
SHARED_LIB := $(BUILD)/lib/libkvbm.so.$(VERSION)
TEST_LIB := $(BUILD)/tests/libkvbm-test.a

.PHONY: all lib tools tests check test test-run asan tsan demo install uninstall \
	deps lint format clean help torture bench model

all: lib tools

help:
	@echo "make            build libkvbm (build/lib) and the tools (build/bin)"
	@echo "make demo       run the multi-process demo (installs build deps first)"
	@echo "make check      install deps, build, run every test (plain, ASan+UBSan, TSan)"
	@echo "make test       build and run the Check suites once (no sanitizers)"
	@echo "make asan|tsan  the test suites under AddressSanitizer+UBSan / ThreadSanitizer"
	@echo "make install PREFIX=DIR   headers, libraries, kvbm.pc and tools"
	@echo "make lint       cppcheck over the sources"
	@echo "make torture DURATION=S   kill random workers of a shared pool for S s (60)"
	@echo "make bench      kvbm-bench, the performance suite (BENCH_ARGS=--quick)"
	@echo "make model      the SPIN models of model/ (needs spin, ~25 min)"

lib: $(STATIC_LIB) $(SHARED_LIB)
tools: $(TOOL_BINS)
tests: $(TEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -c $< -o $@

$(BUILD)/tobj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -DKVBM_FAILPOINTS $(CHECK_CFLAGS) -Wno-missing-prototypes -c $< -o $@

$(BUILD)/tobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -DKVBM_FAILPOINTS -c $< -o $@

$(STATIC_LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libkvbm.so.$(SOVERSION) -Wl,--no-undefined \
		$(LDFLAGS_COMMON) -o $@ $^ $(LIB_LIBS)
	ln -sf libkvbm.so.$(VERSION) $(BUILD)/lib/libkvbm.so.$(SOVERSION)
	ln -sf libkvbm.so.$(VERSION) $(BUILD)/lib/libkvbm.so

$(TEST_LIB): $(TLIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(TOOL_COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $< $(TOOL_COMMON_OBJS) $(STATIC_LIB) $(LIB_LIBS) $(TOOL_LIBS)

$(TEST_BIN): $(TEST_OBJS) $(TEST_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $(TEST_OBJS) $(TEST_LIB) $(CHECK_LIBS) $(LIB_LIBS)

# Not a Check suite: a standalone driver, with the failpoint library
$(TORTURE_BIN): $(BUILD)/tobj/tests/torture.o $(TEST_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $< $(TEST_LIB) $(LIB_LIBS)

# The performance suite (issue 6); BENCH_ARGS=--quick for the short one.
bench: $(BUILD)/bin/kvbm-bench
	$(BUILD)/bin/kvbm-bench $(BENCH_ARGS)

# The SPIN models of what the code adds to the slot protocol (model/README.md;
# about 25 minutes, needs spin).
model:
	@command -v spin >/dev/null || { echo "make model: needs spin (apt-get install spin)"; exit 1; }
	model/verify.sh

# SIGKILLs random workers of a shared pool for DURATION seconds (60).
torture: $(TORTURE_BIN) $(TOOL_BINS)
	BUILD=$(BUILD) scripts/torture.sh $(DURATION)

# Runs the suites; the tool tests find the binaries through KVBM_BIN.
test-run: $(TEST_BIN) $(TOOL_BINS)
	KVBM_BIN=$(abspath $(BUILD)/bin) $(TEST_BIN)

test: test-run

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g" \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		test-run

tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g" SAN="-fsanitize=thread" test-run

deps:
	@scripts/deps.sh

# The README's test command: everything CI runs.
check: deps
	$(MAKE) all
	$(MAKE) lint
	$(MAKE) test-run
	scripts/test-install.sh
	$(MAKE) torture DURATION=40
	$(MAKE) asan
	$(MAKE) BUILD=build-asan OPT="-O1 -g" \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		torture DURATION=15
	$(MAKE) tsan
	@echo "make check: all suites passed"

demo: deps
	$(MAKE) all
	$(BUILD)/bin/kvbm-demo

install: lib tools
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/bin
	install -m 0644 include/kvbm.h $(DESTDIR)$(PREFIX)/include/
	install -m 0644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libkvbm.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libkvbm.so.$(SOVERSION)
	ln -sf libkvbm.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libkvbm.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' scripts/kvbm.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvbm.pc
	install -m 0755 $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/kvbm.h $(DESTDIR)$(PREFIX)/lib/libkvbm.* \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig/kvbm.pc $(TOOLS:%=$(DESTDIR)$(PREFIX)/bin/%)

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
		--suppress=missingIncludeSystem --inline-suppr -Iinclude shm lib tools

format:
	clang-format -i $(LIB_SRCS) $(wildcard shm/*.h lib/*.h tools/*.[ch] tests/*.[ch]) include/kvbm.h

clean:
	rm -rf build build-asan build-tsan

.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
