# switchyard build.  `make` builds the library and the binary, `make test`
# installs what is missing, builds and runs every spec, `make demo` runs the
# engine on a throwaway local cluster.

CC      ?= cc
BUILD   ?= build
HOME_DIR := $(CURDIR)

PKG_CFLAGS := -I/usr/include/luajit-2.1 -I/usr/include/postgresql
PKG_LIBS   := -lluajit-5.1 -lpq -lev -lcurl -lm -lssl -lcrypto

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -g \
               -DSY_DEFAULT_HOME='"$(HOME_DIR)"' $(PKG_CFLAGS)
ifeq ($(SANITIZE),1)
  BUILD := build-san
  CFLAGS_BASE += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
else
  CFLAGS_BASE += -O2
endif
CFLAGS += $(CFLAGS_BASE)

LIB_SRC := $(filter-out core/main.c core/cli_%.c,$(wildcard core/*.c))
CLI_SRC := core/main.c $(wildcard core/cli_*.c)
LIB_OBJ := $(LIB_SRC:core/%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:core/%.c=$(BUILD)/obj/%.o)
HEADERS := $(wildcard core/*.h)

all: $(BUILD)/libswitchyard.a $(BUILD)/libswitchyard.so $(BUILD)/switchyard tools

$(BUILD)/obj/%.o: core/%.c $(HEADERS) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj:
	mkdir -p $@

$(BUILD)/libswitchyard.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libswitchyard.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/switchyard: $(CLI_OBJ) $(BUILD)/libswitchyard.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libswitchyard.a $(PKG_LIBS)

deps:
	@sh spec/support/deps.sh

# The specs run on LuaJIT.  SPEC=path narrows the run to one file or folder.
SPEC ?= spec
test: deps
	$(MAKE) all
	@SWITCHYARD_BUILD=$(BUILD) SANITIZE=$(SANITIZE) sh spec/support/run_specs.sh $(SPEC)

lint:
	luacheck --quiet lua policies spec examples bench

demo: deps all
	@SWITCHYARD_BUILD=$(BUILD) luajit examples/demo.lua
	@SWITCHYARD_BUILD=$(BUILD) luajit examples/demo_proxy.lua

bench-core: deps all benches
	@SWITCHYARD_BUILD=$(BUILD) sh bench/core.sh

# The proxy against direct PostgreSQL, PgBouncer and Pgpool-II (~3 minutes;
# BENCH_SECONDS, BENCH_ROUNDS, BENCH_IDLE_CLIENTS tune it).
bench: deps all benches
	@SWITCHYARD_BUILD=$(BUILD) sh bench/proxy.sh

# Failover time, health polling cost, read-your-writes cost (~2 minutes;
# BENCH_HA_RUNS, BENCH_HA_SECONDS tune it).
bench-ha: deps all
	@SWITCHYARD_BUILD=$(BUILD) luajit bench/ha.lua

clean:
	rm -rf build build-san

.PHONY: all deps test lint demo bench bench-core bench-ha clean

# Small C tools the test bed uses (a delaying TCP relay, ...).
TOOLS := $(patsubst spec/support/%.c,$(BUILD)/tools/%,$(wildcard spec/support/*.c))
tools: $(TOOLS)
$(BUILD)/tools/%: spec/support/%.c | $(BUILD)/tools
	$(CC) $(CFLAGS_BASE) $(LDFLAGS) -o $@ $< -lev
$(BUILD)/tools:
	mkdir -p $@
.PHONY: tools

# Benchmarks (bench/*.c link the static library; route_bench reaches the
# engine's internal Lua gateway on purpose, to time it without network).
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
benches: $(BENCH_BIN)
$(BUILD)/bench/%: bench/%.c $(BUILD)/libswitchyard.a $(HEADERS) | $(BUILD)/bench
	$(CC) $(CFLAGS) $(LDFLAGS) -Icore -o $@ $< $(BUILD)/libswitchyard.a $(PKG_LIBS)
$(BUILD)/bench:
	mkdir -p $@
.PHONY: benches
