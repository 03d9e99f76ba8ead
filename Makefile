# chatq - build, test, run and benchmark.
#
#   make                 bin/chatq-api, bin/chatq-processor, bin/chatq-handler,
#                        bin/chatq-stat, bin/chatq-fake-upstream, bin/chatq-webhook
#   make run             the whole system on this machine (see README.md)
#   make test            format check, then unit + integration tests (ASan/UBSan)
#   make bench           the performance table
#   make format-check    fails where `make format` would change a file
#   make install         PREFIX=/usr/local DESTDIR=
#   make SANITIZE=address,undefined   an instrumented build
#   make valgrind        the unit and integration tests under valgrind
#   make fuzz            each libFuzzer target for FUZZ_SECONDS (clang)
#   make docker-base     the Debian 12 base image of the Docker images (debootstrap)
#   make test-compose    docker-compose.yml built, run, scaled and checked

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
OPT ?= -O2 -g
# O: output folder of an alternative build (objects and binaries), e.g. the
# sanitizer build that the tests use; empty for the normal build.
O ?=

BINDIR := $(if $(O),$(O)/bin,bin)
OBJDIR := $(if $(O),$(O)/obj,build/obj)

PKGS := hiredis jansson libcurl libevent
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2
ifneq ($(WERROR),)
WARN += -Werror
endif
ifneq ($(SANITIZE),)
SAN := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) $(SAN) -MMD -MP -Icommon \
              $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SAN) $(LDFLAGS)

COMMON_SRC := $(wildcard common/*.c)
API_SRC := $(wildcard api/*.c)
PROCESSOR_SRC := $(wildcard processor/*.c)
HANDLER_SRC := $(wildcard handler/*.c)
FAKE_SRC := $(wildcard fake-upstream/*.c)
STAT_SRC := $(wildcard stat/*.c)
WEBHOOK_SRC := $(wildcard webhook/*.c)

obj = $(patsubst %.c,$(OBJDIR)/%.o,$(1))
LIBCOMMON := $(OBJDIR)/libchatq.a

PROGRAMS := $(BINDIR)/chatq-api $(BINDIR)/chatq-processor $(BINDIR)/chatq-handler \
            $(BINDIR)/chatq-stat $(BINDIR)/chatq-fake-upstream $(BINDIR)/chatq-webhook

.PHONY: all install uninstall test test-programs unit run bench format format-check \
        valgrind deps sdk-deps fuzz fuzz-programs \
        clean check-compose docker-base test-compose
all: $(PROGRAMS)

$(OBJDIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
	$(AR) rcs $@ $^

# The status page (api/status.html) goes into the api as a byte array: one file to
# edit, nothing to install, no build tool but od and sed.
PAGE_GEN := $(OBJDIR)/gen/page_html.c
PAGE_OBJ := $(OBJDIR)/gen/page_html.o
$(PAGE_GEN): api/status.html
	@mkdir -p $(dir $@)
	{ echo '/* generated from api/status.html by the Makefile: do not edit */'; \
	  echo '#include <stddef.h>'; \
	  echo 'const unsigned char page_html[] = {'; \
	  od -An -v -tx1 $< | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '};'; \
	  echo 'const size_t page_html_len = sizeof(page_html);'; } > $@
$(PAGE_OBJ): $(PAGE_GEN)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BINDIR)/chatq-api: $(call obj,$(API_SRC)) $(PAGE_OBJ) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcivetweb -lhiredis -ljansson -lpthread -lm

$(BINDIR)/chatq-processor: $(call obj,$(PROCESSOR_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcurl -levent -lhiredis -ljansson -lpthread -lm

$(BINDIR)/chatq-handler: $(call obj,$(HANDLER_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -levent -lhiredis -ljansson -lpthread -lm

$(BINDIR)/chatq-stat: $(call obj,$(STAT_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lhiredis -ljansson -lm

# HMAC-SHA256 for the signatures from libcrypto (OpenSSL), which libcurl already
# loads for https.
$(BINDIR)/chatq-webhook: $(call obj,$(WEBHOOK_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcurl -lcrypto -lhiredis -ljansson -lm

# The fake takes from the common archive only what it shares with chatq: the log
# line, clock and UTF-8 helpers (it needs no Redis, so no other member is linked).
$(BINDIR)/chatq-fake-upstream: $(call obj,$(FAKE_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -levent -ljansson -lm

# ---- tests ------------------------------------------------------------------
# Each tests/unit/test_X.c is one cmocka program; it may link any object of the
# project except the files holding main().
TEST_SAN ?= address,undefined
TEST_O := build/test
UNIT_SRC := $(wildcard tests/unit/test_*.c)
MAINS := api/main.c processor/main.c handler/main.c fake-upstream/main.c webhook/main.c
LIB_OBJS = $(call obj,$(filter-out $(MAINS),$(API_SRC) $(PROCESSOR_SRC) $(HANDLER_SRC) \
                                             $(WEBHOOK_SRC))) \
           $(PAGE_OBJ)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BINDIR)/tests/%,$(UNIT_SRC))
INTEG_SRC := $(wildcard tests/integration/*.c)
INTEG_BIN := $(BINDIR)/tests/integration

$(BINDIR)/tests/%: $(OBJDIR)/tests/unit/%.o $(LIB_OBJS) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcmocka -lcivetweb -lcurl -lcrypto -levent -lhiredis \
	    -ljansson -lpthread -lm

# The fake's limiter is tested on its own (the fake's other files share names with
# the api's, so they are not in LIB_OBJS).
$(BINDIR)/tests/test_fake_limit: $(call obj,fake-upstream/limit.c)

$(INTEG_BIN): $(call obj,$(INTEG_SRC)) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcmocka -lcurl -lhiredis -ljansson -lpthread -lm

test-programs: $(PROGRAMS) $(UNIT_BINS) $(INTEG_BIN)

# Each tests/fuzz/fuzz_X.c is one libFuzzer target. They are built by clang in a
# build of their own, the project's objects instrumented for coverage as well.
FUZZ_O := build/fuzz
FUZZ_SAN := fuzzer-no-link,address,undefined
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 2
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BINDIR)/fuzz/%,$(FUZZ_SRC))

$(BINDIR)/fuzz/%: $(OBJDIR)/tests/fuzz/%.o $(LIB_OBJS) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ -lcivetweb -lcurl -lcrypto -levent \
	    -lhiredis -ljansson -lpthread -lm

fuzz-programs: $(FUZZ_BINS)

deps:
	@scripts/deps.sh build test run

# The official openai npm package the SDK tests drive (tests/sdk/), installed from
# the lock file when missing.
sdk-deps:
	@[ -f tests/sdk/node_modules/openai/package.json ] || \
	    (cd tests/sdk && npm ci --no-audit --no-fund)

# Without T, a short fuzzing run of every target too (a crash fails the test).
test: deps
	@$(MAKE) --no-print-directory sdk-deps
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory O=$(TEST_O) SANITIZE=$(TEST_SAN) WERROR=1 test-programs
	@$(if $(T),true,$(MAKE) --no-print-directory O=$(FUZZ_O) CC=clang SANITIZE=$(FUZZ_SAN) \
	    WERROR=1 fuzz-programs)
	@$(if $(T),true,scripts/fuzz.sh $(FUZZ_O)/bin $(FUZZ_SMOKE_SECONDS))
	@scripts/test.sh $(TEST_O)/bin $(T)

fuzz: deps
	@$(MAKE) --no-print-directory O=$(FUZZ_O) CC=clang SANITIZE=$(FUZZ_SAN) WERROR=1 \
	    fuzz-programs
	@scripts/fuzz.sh $(FUZZ_O)/bin $(FUZZ_SECONDS)

unit: deps
	@$(MAKE) --no-print-directory O=$(TEST_O) SANITIZE=$(TEST_SAN) WERROR=1 test-programs
	@scripts/test.sh --unit-only $(TEST_O)/bin

valgrind: deps
	@$(MAKE) --no-print-directory O=build/vg OPT="-O1 -g" test-programs
	@CHATQ_TEST_JOBS=$${CHATQ_TEST_JOBS:-1} \
	    CHATQ_WRAP="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --quiet --max-threads=1024" \
	    scripts/test.sh build/vg/bin

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS)))

FORMAT_SRC = $(wildcard common/*.[ch] api/*.[ch] processor/*.[ch] handler/*.[ch] \
                fake-upstream/*.[ch] stat/*.[ch] webhook/*.[ch] tests/*/*.[ch] bench/*.[ch])

format:
	clang-format -i $(FORMAT_SRC)

# Fails, naming each file and line, where `make format` would change something.
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

check-compose:
	docker-compose -f docker-compose.yml config -q

docker-base:
	@scripts/deps.sh compose
	@scripts/docker-base.sh

test-compose:
	@scripts/test-compose.sh

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
