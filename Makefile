# kvbm-shm - GNU make build. `make help` lists the targets.

CC ?= gcc
PREFIX ?= /usr/local
BUILD ?= build
OPT ?= -O2 -g
SAN ?=

comma := ,
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

TOOLS := kvbm-shm-dump kvbm-pool kvbm-demo kvbm-hash kvbm-bench kvbm-replay kvbm-events kvbmd \
	kvbm-reap-bench kvbm-events-bench kvbm-top
TOOL_COMMON_SRCS := tools/json.c tools/inspect.c tools/dump.c tools/msgpack.c tools/kvevents.c \
	tools/stop.c
TOOL_COMMON_OBJS := $(TOOL_COMMON_SRCS:%.c=$(BUILD)/obj/%.o)
TOOL_BINS := $(TOOLS:%=$(BUILD)/bin/%)
TOOL_LIBS := $(shell pkg-config --libs jemalloc 2>/dev/null || echo -ljemalloc) -lpthread
# kvbmd, the service (tools/kvbmd/): several files, and libmicrohttpd
KVBMD_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/kvbmd/*.c))
MHD_LIBS := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
# kvbmd publishes and kvbm-events subscribes to vLLM's ZMQ KV events
ZMQ_LIBS := $(shell pkg-config --libs libzmq 2>/dev/null || echo -lzmq)
# and Dynamo's event plane over NATS (cnats)
NATS_LIBS := $(shell pkg-config --libs libnats 2>/dev/null || echo -lnats)

TEST_SRCS := $(filter-out tests/torture.c tests/fuzz_%.c tests/wire_%.c,$(wildcard tests/*.c))
TORTURE_BIN := $(BUILD)/tests/kvbm-torture
DURATION ?= 60
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/tobj/%.o)
TEST_BIN := $(BUILD)/tests/check_kvbm
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

# examples/: complete programs built the way a user builds against the
# installed library (the header, -lkvbm), linked to build/lib's shared
# library with an rpath so they run from the tree
EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
EXAMPLE_CFLAGS := -std=c11 $(OPT) $(WARN) $(SAN) -Iinclude

STATIC_LIB := $(BUILD)/lib/libkvbm.a
SHARED_LIB := $(BUILD)/lib/libkvbm.so.$(VERSION)
TEST_LIB := $(BUILD)/tests/libkvbm-test.a

.PHONY: all lib tools tests check test test-run asan tsan demo install uninstall \
	deps lint format clean help torture bench model fuzz fuzz-check fuzz-corpus \
	interop reap-bench events-bench examples examples-check python-check python-asan \
	python-bench workloads

all: lib tools examples

help:
	@echo "make            build libkvbm (build/lib) and the tools (build/bin)"
	@echo "make demo       inference processes sharing KV through one pool (installs deps first)"
	@echo "make demo DEMO_ARGS=--kill   the same, SIGKILLing an engine mid-run"
	@echo "make demo-c     the C demo: processes sharing blocks, one killed holding them"
	@echo "make check      install deps, build, run every test (plain, ASan+UBSan, TSan)"
	@echo "make test       build and run the Check suites once (no sanitizers)"
	@echo "make examples-check   run examples/ and check their output"
	@echo "make asan|tsan  the test suites under AddressSanitizer+UBSan / ThreadSanitizer"
	@echo "make install PREFIX=DIR   headers, libraries, kvbm.pc, tools, man pages, docs, examples,"
	@echo "                 the Python package"
	@echo "make python-check  the Python package's tests (pytest, python/tests)"
	@echo "make python-asan   the same against the ASan+UBSan build of libkvbm"
	@echo "make python-bench  the Python binding's speed (python -m kvbm.bench)"
	@echo "make lint       cppcheck over the sources"
	@echo "make torture DURATION=S   kill random workers of a shared pool for S s (60)"
	@echo "make bench      kvbm-bench, the performance suite (BENCH_ARGS=--quick)"
	@echo "make model      the SPIN models of model/ (needs spin, ~25 min)"
	@echo "make interop    promtool and a real Prometheus scraping kvbmd (scripts/deps.sh --interop)"
	@echo "make reap-bench SIGKILL of a holder to its blocks free, with kvbmd running (p50/p99)"
	@echo "make events-bench  kvbmd's ZMQ KV events: events/s, register-to-subscriber p99"
	@echo "make fuzz FUZZ_SECONDS=S   fuzz the segment bytes for S s (600; libFuzzer, clang)"

lib: $(STATIC_LIB) $(SHARED_LIB)
tools: $(TOOL_BINS)
tests: $(TEST_BIN)
examples: $(EXAMPLES)

$(BUILD)/examples/%: examples/%.c include/kvbm.h include/kvbm_tier.h $(SHARED_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(EXAMPLE_CFLAGS) -o $@ $< -L$(BUILD)/lib -lkvbm -Wl,-rpath,$(abspath $(BUILD)/lib)

# runs every example and checks its output, and that the README quotes
# examples/basic.c
examples-check: $(EXAMPLES) $(BUILD)/bin/kvbm-pool
	BUILD=$(BUILD) scripts/test-examples.sh

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

$(BUILD)/bin/kvbmd: $(KVBMD_OBJS) $(TOOL_COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $(KVBMD_OBJS) $(TOOL_COMMON_OBJS) $(STATIC_LIB) $(LIB_LIBS) \
		$(MHD_LIBS) $(ZMQ_LIBS) $(NATS_LIBS) -lm $(TOOL_LIBS)

# kvbm-bench's side-by-side modes (--ops, --peer, --instructions) are a
# file of their own
$(BUILD)/bin/kvbm-bench: $(BUILD)/obj/tools/kvbm-bench.o $(BUILD)/obj/tools/bench_peer.o \
		$(TOOL_COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $(filter %.o,$^) $(STATIC_LIB) $(LIB_LIBS) $(TOOL_LIBS)

$(BUILD)/bin/kvbm-events $(BUILD)/bin/kvbm-events-bench: $(BUILD)/bin/%: $(BUILD)/obj/tools/%.o \
		$(TOOL_COMMON_OBJS) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $< $(TOOL_COMMON_OBJS) $(STATIC_LIB) $(LIB_LIBS) $(ZMQ_LIBS) \
		$(NATS_LIBS) $(TOOL_LIBS)

$(TEST_BIN): $(TEST_OBJS) $(TEST_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $(TEST_OBJS) $(TEST_LIB) $(CHECK_LIBS) $(LIB_LIBS)

# Not a Check suite: a standalone driver, with the failpoint library
$(TORTURE_BIN): $(BUILD)/tobj/tests/torture.o $(TEST_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $< $(TEST_LIB) $(LIB_LIBS)

# Synthetic eviction workloads (scripts/gen-workload.py, docs/EVICTION.md):
# generated from a fixed seed into $(BUILD)/workloads, never committed
WORKLOADS := multi-tenant agentic scan-heavy rag code
WORKLOAD_FILES := $(WORKLOADS:%=$(BUILD)/workloads/%.jsonl)
workloads: $(WORKLOAD_FILES)
$(BUILD)/workloads/%.jsonl: scripts/gen-workload.py
	@mkdir -p $(dir $@)
	/usr/bin/python3 scripts/gen-workload.py $* --seed 1 -o $@

# The performance suite (issue 6); BENCH_ARGS=--quick for the short one.
bench: $(BUILD)/bin/kvbm-bench
	$(BUILD)/bin/kvbm-bench $(BENCH_ARGS)

# kvbmd's exposition through promtool and a real Prometheus server (its
# Debian package is large: `scripts/deps.sh --interop` installs it).
interop: all
	BUILD=$(BUILD) scripts/interop-prometheus.sh

# kvbmd's ZMQ KV events: events/s from one pool, register-to-subscriber
# latency (EVENTS_BENCH_ARGS: --seconds S --rate N --window-ms W)
events-bench: $(BUILD)/bin/kvbm-events-bench $(BUILD)/bin/kvbmd
	KVBM_SHM_DIR=$${KVBM_SHM_DIR:-/dev/shm} $(BUILD)/bin/kvbm-events-bench \
		--kvbmd $(BUILD)/bin/kvbmd $(EVENTS_BENCH_ARGS)

# The time from SIGKILL of a holder to its blocks being free, kvbmd running
# (target p99 <= 10 ms); REAP_ARGS="--rounds N --hold B".
reap-bench: $(BUILD)/bin/kvbm-reap-bench $(BUILD)/bin/kvbmd
	KVBM_SHM_DIR=$${KVBM_SHM_DIR:-/dev/shm} $(BUILD)/bin/kvbm-reap-bench --kvbmd $(BUILD)/bin/kvbmd $(REAP_ARGS)

# The SPIN models of what the code adds to the slot protocol (model/README.md;
# about 25 minutes, needs spin).
model:
	@command -v spin >/dev/null || { echo "make model: needs spin (apt-get install spin)"; exit 1; }
	model/verify.sh

# SIGKILLs random workers of a shared pool for DURATION seconds (60).
torture: $(TORTURE_BIN) $(TOOL_BINS)
	BUILD=$(BUILD) scripts/torture.sh $(DURATION)

# The KV event encoders against the spec's bytes (not a Check suite: it
# links the tools' encoders).
WIRE_BIN := $(BUILD)/tests/wire-vectors
$(WIRE_BIN): $(BUILD)/tobj/tests/wire_vectors.o $(BUILD)/obj/tools/msgpack.o \
		$(BUILD)/obj/tools/kvevents.o $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_COMMON) -o $@ $^ $(LIB_LIBS)

# Runs the suites; the tool tests find the binaries through KVBM_BIN, and
# the tools' stderr (expected errors, mostly) goes to KVBM_TOOL_STDERR.
test-run: $(TEST_BIN) $(TOOL_BINS) $(WIRE_BIN)
	$(WIRE_BIN)
	@: > $(BUILD)/tests/tool-stderr.log
	KVBM_BIN=$(abspath $(BUILD)/bin) KVBM_TOOL_STDERR=$(abspath $(BUILD)/tests/tool-stderr.log) \
		$(TEST_BIN)

test: test-run

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g" \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		test-run

# tests/tsan.supp: what TSan reports inside libzmq, which is not instrumented
tsan:
	TSAN_OPTIONS="$${TSAN_OPTIONS:+$$TSAN_OPTIONS:}suppressions=$(abspath tests/tsan.supp)" \
		$(MAKE) BUILD=build-tsan OPT="-O1 -g" SAN="-fsanitize=thread" test-run

deps:
	@scripts/deps.sh

# ---- the Python package (python/kvbm, docs/PYTHON.md) -------------------------
# Debian's python3: pyenv's or a venv's may lack numpy and pytest.
PYTHON ?= /usr/bin/python3
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# Debian's python3 reads /usr/lib/python3/dist-packages, and
# PREFIX/lib/python3.X/dist-packages for any other prefix (/usr/local);
# the package finds PREFIX/lib/libkvbm.so.0 three levels up from itself
PYDIR ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYVER)/dist-packages)

# the package against this build's library (KVBM_LIB); kvbm-hash is the
# hash tests' second opinion
python-check: $(SHARED_LIB) $(BUILD)/bin/kvbm-hash
	KVBM_LIB=$(abspath $(BUILD)/lib/libkvbm.so.0) $(PYTHON) -m pytest -q python/tests

# the same tests against the ASan+UBSan build of libkvbm (preloaded into
# Debian's python3, which is not instrumented): a buffer the binding sizes
# wrongly is a heap-buffer-overflow report, not silent corruption
PY_ASAN_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
python-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g" SAN="$(PY_ASAN_SAN)" build-asan/lib/libkvbm.so.$(VERSION)
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 KVBM_LIB=$(abspath build-asan/lib/libkvbm.so.0) \
		$(PYTHON) -m pytest -q -p no:cacheprovider python/tests/test_binding*.py

python-bench: $(SHARED_LIB)
	cd python && KVBM_LIB=$(abspath $(BUILD)/lib/libkvbm.so.0) $(PYTHON) -m kvbm.bench $(BENCH_ARGS)

# make check's phases: a heading before each, its time after, so a long
# quiet phase (the torture runs) is visibly running and a failure is placed.
define phase
	@echo "== make check: $(1)"; t0=$$(date +%s); $(2) || exit 1; \
		echo "== make check: $(1): passed in $$(( $$(date +%s) - t0 )) s"
endef

# The README's test command: everything CI runs. The tools' expected error
# messages go to $(BUILD)/tests/tool-stderr.log, not to the terminal.
check: deps
	$(call phase,build,$(MAKE) -s all)
	$(call phase,lint (cppcheck),$(MAKE) -s lint)
	$(call phase,the Check suites,$(MAKE) -s test-run)
	$(call phase,the examples,$(MAKE) -s examples-check)
	$(call phase,the tools' man pages and scripts,BUILD=$(BUILD) scripts/test-tools.sh)
	$(call phase,the Python package (pytest),$(MAKE) -s python-check)
	$(call phase,install and a program built against it,scripts/test-install.sh)
	$(call phase,torture: 40 s of SIGKILLed workers on one pool,$(MAKE) -s torture DURATION=40)
	$(call phase,the Check suites under ASan+UBSan,$(MAKE) -s asan)
	$(call phase,the Python binding against the ASan+UBSan library,$(MAKE) -s python-asan)
	$(call phase,torture under ASan+UBSan: 15 s,$(MAKE) -s BUILD=build-asan OPT="-O1 -g" \
		SAN="-fsanitize=address$(comma)undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		torture DURATION=15)
	$(call phase,the Check suites under TSan,$(MAKE) -s tsan)
	$(call phase,the segment fuzzer,$(MAKE) -s fuzz-check)
	@echo "make check: all suites passed"

# The README's main command: inference processes (a tiny numpy transformer
# with a paged KV cache) reusing each other's KV through one pool
# (python/examples, docs/ENGINE.md). Debian's python3 has the numpy; pyenv's
# may not. demo-c is the C demo of the block calls alone.
.PHONY: demo-engine demo-c
demo: demo-engine
demo-engine: deps
	$(MAKE) -s lib
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=python \
		KVBM_LIB=$(abspath $(BUILD)/lib/libkvbm.so.0) \
		$(PYTHON) python/examples/demo.py $(DEMO_ARGS)

demo-c: deps
	$(MAKE) all
	$(BUILD)/bin/kvbm-demo

install: lib tools
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/bin
	install -m 0644 include/kvbm.h include/kvbm_sequence.h include/kvbm_tier.h $(DESTDIR)$(PREFIX)/include/
	install -m 0644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libkvbm.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libkvbm.so.$(SOVERSION)
	ln -sf libkvbm.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libkvbm.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@RPATH@|$(PC_RPATH)|' \
		scripts/kvbm.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/kvbm.pc
	install -m 0755 $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/share/doc/kvbm/examples
	install -m 0644 $(wildcard examples/*.c) $(DESTDIR)$(PREFIX)/share/doc/kvbm/examples/
	install -m 0644 README.md CHANGELOG.md LICENSE BENCHMARKS.md $(wildcard docs/*.md) \
		$(DESTDIR)$(PREFIX)/share/doc/kvbm/
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3 \
		$(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0644 $(wildcard docs/man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 $(wildcard docs/man/*.3) $(DESTDIR)$(PREFIX)/share/man/man3/
	install -m 0644 $(wildcard docs/man/*.8) $(DESTDIR)$(PREFIX)/share/man/man8/
	install -d $(DESTDIR)$(PYDIR)/kvbm
	install -m 0644 python/kvbm/*.py $(DESTDIR)$(PYDIR)/kvbm/

# A program linked with `pkg-config --libs kvbm` finds libkvbm.so at run
# time through the rpath this puts in kvbm.pc, except for PREFIX=/usr,
# whose lib directory the loader searches anyway.
PC_RPATH := $(if $(filter /usr,$(PREFIX)),,-Wl,-rpath,$${libdir})

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/kvbm
	rm -f $(patsubst docs/man/%,$(DESTDIR)$(PREFIX)/share/man/man1/%,$(wildcard docs/man/*.1)) \
		$(patsubst docs/man/%,$(DESTDIR)$(PREFIX)/share/man/man3/%,$(wildcard docs/man/*.3)) \
		$(patsubst docs/man/%,$(DESTDIR)$(PREFIX)/share/man/man8/%,$(wildcard docs/man/*.8))
	rm -rf $(DESTDIR)$(PYDIR)/kvbm
	rm -f $(DESTDIR)$(PREFIX)/include/kvbm.h $(DESTDIR)$(PREFIX)/include/kvbm_sequence.h \
		$(DESTDIR)$(PREFIX)/include/kvbm_tier.h \
		$(DESTDIR)$(PREFIX)/lib/libkvbm.* \
		$(DESTDIR)$(PREFIX)/lib/pkgconfig/kvbm.pc $(TOOLS:%=$(DESTDIR)$(PREFIX)/bin/%)

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
		--suppress=missingIncludeSystem --inline-suppr -Iinclude shm lib tools

format:
	clang-format -i $(LIB_SRCS) $(wildcard shm/*.h lib/*.h tools/*.[ch] tests/*.[ch]) include/kvbm.h

clean:
	rm -rf build build-asan build-tsan $(FUZZ_BUILD)

# ---- the segment fuzzer (tests/fuzz_segment.c) -------------------------------
# libFuzzer with clang (whose -Wformat=2 also flags vsnprintf wrappers), else
# a gcc-built replay of the corpus: tests/corpus, damaged images of real pools
# (`make fuzz-corpus` remakes it).
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_CHECK_SECONDS ?= 45
FUZZ_CORPUS := tests/corpus
FUZZ_SRCS := tests/fuzz_segment.c $(LIB_SRCS) tools/inspect.c tools/json.c tools/dump.c
FUZZ_CFLAGS := -std=c11 -O1 -g $(WARN) -Iinclude -fsanitize=address,undefined \
	-fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_ARGS := -close_fd_mask=3 -timeout=10 -rss_limit_mb=2048
HAVE_CLANG := $(shell command -v clang >/dev/null 2>&1 && echo 1)

$(FUZZ_BUILD)/fuzz_segment: $(FUZZ_SRCS) $(wildcard lib/*.h shm/*.h tools/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -Wno-format-nonliteral -fsanitize=fuzzer -o $@ $(FUZZ_SRCS) $(LIB_LIBS)

$(FUZZ_BUILD)/fuzz_replay: $(FUZZ_SRCS) tests/fuzz_replay.c $(wildcard lib/*.h shm/*.h tools/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(FUZZ_CFLAGS) -o $@ $(FUZZ_SRCS) tests/fuzz_replay.c $(LIB_LIBS)

$(FUZZ_BUILD)/fuzz_corpus: tests/fuzz_corpus.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -o $@ $< $(STATIC_LIB) $(LIB_LIBS)

fuzz-corpus: $(FUZZ_BUILD)/fuzz_corpus
	rm -rf $(FUZZ_CORPUS) && mkdir -p $(FUZZ_CORPUS)
	$(FUZZ_BUILD)/fuzz_corpus $(FUZZ_CORPUS)

# make check: every corpus file once, then FUZZ_CHECK_SECONDS of fuzzing
fuzz-check:
ifeq ($(HAVE_CLANG),1)
	$(MAKE) $(FUZZ_BUILD)/fuzz_segment
	$(FUZZ_BUILD)/fuzz_segment $(FUZZ_ARGS) $(FUZZ_CORPUS)/*
	@mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BUILD)/fuzz_segment $(FUZZ_ARGS) -max_total_time=$(FUZZ_CHECK_SECONDS) \
		$(FUZZ_BUILD)/corpus $(FUZZ_CORPUS)
else
	@echo "fuzz-check: no clang, corpus replay only (apt-get install clang for libFuzzer)"
	$(MAKE) $(FUZZ_BUILD)/fuzz_replay
	$(FUZZ_BUILD)/fuzz_replay $(FUZZ_CORPUS)
endif

# the long run: new inputs go to build-fuzz/corpus, crashes to build-fuzz/
fuzz: $(FUZZ_BUILD)/fuzz_segment
	@mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BUILD)/fuzz_segment $(FUZZ_ARGS) -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_BUILD)/corpus $(FUZZ_CORPUS)

.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
