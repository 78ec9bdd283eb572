# The benchmark harness.
#
#   make run         the main job: zsmalloc (dense and kernel layouts) against glibc malloc,
#                    jemalloc and mimalloc on the bundled compressed-page traces, and on the
#                    traces of compressed 16 and 32 KiB units in pools of that object limit
#                    (--max-object-size); one table
#   make bench       the full comparison (traces at 10k/100k/1M objects, size sweep, churn,
#                    1 and 2 threads; the kernel's own test workload at chains 4, 8 and 16;
#                    the sqlite trace in adversarial orders): JSON in build/bench/full,
#                    bench/results/table.md and bench/results/chart.png
#   make test-bench  a smoke test of the harness (a few seconds)
#   make bench-hot   the fast paths of the C ABI against their baselines in one process
#                    (bench/hot.c): write+read against memcpy, malloc+free pairs against
#                    malloc, map+unmap, and the scaling figure: pairs on 1..2 x nproc
#                    threads, private and shared objects, with and without a concurrent
#                    compactor; against glibc, jemalloc and mimalloc (bench/results/hot.md;
#                    also part of make bench)
#
# bench/zsbench.c drives the zs_* ABI; bench/zs_on_malloc.c is the same ABI on malloc,
# preloaded (LD_PRELOAD) to run the identical workload on the process's malloc, and with
# jemalloc or mimalloc preloaded too, on those. jemalloc and mimalloc take part only where
# installed (`make deps` installs them on Debian: libjemalloc2, libmimalloc2.0);
# JEMALLOC=/MIMALLOC= name other copies, or nothing to leave them out.

BENCH_CFLAGS  ?= -std=c11 -Wall -Wextra -Werror -O2 -g
ZSBENCH       := $(BUILD)/zsbench
ZS_ON_MALLOC  := $(BUILD)/libzs_on_malloc.so
ZSHOT         := $(BUILD)/zshot
BENCH_OUT     := $(BUILD)/bench
BENCH_RESULTS := bench/results
TRACE_NODE    := data/workloads/node-heap-lz4.txt
TRACE_SQLITE  := data/workloads/sqlite-heap-lz4.txt
# Compressed units larger than a page, each run in a pool whose max_object_size is the
# unit: UNIT_TRACES lists unit:trace pairs.
UNIT_TRACES   := 16384:data/workloads/usr-ext4-lz4-16k.txt 32768:data/workloads/usr-ext4-lz4-32k.txt
# The kernel's own test workload in make bench: its second step (9 bytes apart,
# 65-77k objects); step 1 is 590-690k objects, 1.2 GiB a run.
SELFTEST_STEP ?= 9
# Repetitions per configuration (the tables show medians).
RUN_REPEAT    ?= 3
BENCH_REPEAT  ?= 3
# Rounds of bench-hot (its threads figure takes medians of (rounds + 7) / 8 runs), and
# its runs with each malloc (bench/results/hot.md gives their medians).
HOT_ROUNDS    ?= 21
HOT_RUNS      ?= 3

# The native library directory first, so that a multiarch system's other copies lose.
BENCH_LIBDIRS := /usr/lib/$(shell uname -m)-linux-gnu /usr/lib64 /usr/lib /usr/local/lib
JEMALLOC      ?= $(firstword $(wildcard $(addsuffix /libjemalloc.so.2,$(BENCH_LIBDIRS))))
MIMALLOC      ?= $(firstword $(wildcard $(addsuffix /libmimalloc.so.2,$(BENCH_LIBDIRS))))

BENCH_ENV = ZSBENCH=$(ZSBENCH) ZS_ON_MALLOC=$(abspath $(ZS_ON_MALLOC)) \
	JEMALLOC="$(JEMALLOC)" MIMALLOC="$(MIMALLOC)" PYTHON=$(PYTHON)
SUITE = $(BENCH_ENV) sh bench/suite.sh

TEST_TARGETS += test-bench

.PHONY: run bench test-bench bench-bin bench-allocators

bench-bin: $(ZSBENCH) $(ZS_ON_MALLOC)

$(ZSBENCH): bench/zsbench.c $(HEADER) $(LIB_SO)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -pthread -Iinclude -o $@ bench/zsbench.c \
		-L$(LIBDIR) -lzsmalloc -Wl,-rpath,$(abspath $(LIBDIR)) -ldl

$(ZS_ON_MALLOC): bench/zs_on_malloc.c $(HEADER)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -fPIC -shared -Iinclude -o $@ bench/zs_on_malloc.c

# Says which optional allocators take part, and how to add those that are missing.
bench-allocators:
	@echo "jemalloc: $(or $(JEMALLOC),not found; left out)"
	@echo "mimalloc: $(or $(MIMALLOC),not found; left out)"
	@$(if $(and $(JEMALLOC),$(MIMALLOC)),:,echo "to add them: sudo make deps (Debian: installs libjemalloc2 and libmimalloc2.0), or JEMALLOC=/MIMALLOC= naming a copy")

run: bench-bin bench-allocators
	@rm -rf $(BENCH_OUT)/run
	@echo "zsbench: each bundled trace as captured and cycled to 100k objects, $(RUN_REPEAT) runs each"
	@$(SUITE) $(BENCH_OUT)/run node $(RUN_REPEAT) --trace $(TRACE_NODE)
	@$(SUITE) $(BENCH_OUT)/run sqlite $(RUN_REPEAT) --trace $(TRACE_SQLITE)
	@$(SUITE) $(BENCH_OUT)/run node-100k $(RUN_REPEAT) --trace $(TRACE_NODE) --objects 100k
	@$(SUITE) $(BENCH_OUT)/run sqlite-100k $(RUN_REPEAT) --trace $(TRACE_SQLITE) --objects 100k
	@set -e; for u in $(UNIT_TRACES); do \
	  $(SUITE) $(BENCH_OUT)/run units-$${u%%:*} $(RUN_REPEAT) --trace $${u#*:} --max-object-size $${u%%:*}; \
	done
	@echo
	@$(PYTHON) bench/compare.py --machine $(BENCH_OUT)/run

bench: bench-bin bench-allocators $(VPY)
	$(call venv_install,bench/requirements.txt)
	@rm -rf $(BENCH_OUT)/full
	@set -e; for t in 1 2; do \
	  for n in 10k 100k; do \
	    $(SUITE) $(BENCH_OUT)/full node-$$n-t$$t $(BENCH_REPEAT) --trace $(TRACE_NODE) --objects $$n --threads $$t; \
	    $(SUITE) $(BENCH_OUT)/full sqlite-$$n-t$$t $(BENCH_REPEAT) --trace $(TRACE_SQLITE) --objects $$n --threads $$t; \
	  done; \
	  $(SUITE) $(BENCH_OUT)/full node-1M-t$$t $(BENCH_REPEAT) --trace $(TRACE_NODE) --objects 1M --threads $$t; \
	  $(SUITE) $(BENCH_OUT)/full sqlite-1M-t$$t $(BENCH_REPEAT) --trace $(TRACE_SQLITE) --objects 1M --threads $$t; \
	  $(SUITE) $(BENCH_OUT)/full sweep-t$$t $(BENCH_REPEAT) --workload sweep --threads $$t; \
	  $(SUITE) $(BENCH_OUT)/full churn-t$$t $(BENCH_REPEAT) --workload churn --trace $(TRACE_SQLITE) \
	    --objects 100k --threads $$t; \
	done
	@set -e; for c in 4 8 16; do \
	  $(SUITE) $(BENCH_OUT)/full kernel-selftest-c$$c $(BENCH_REPEAT) --workload kernel-selftest \
	    --sweep-step $(SELFTEST_STEP) --chain $$c; \
	done
	@set -e; for o in ascending descending sawtooth by-size; do \
	  $(SUITE) $(BENCH_OUT)/full sqlite-100k-$$o $(BENCH_REPEAT) --trace $(TRACE_SQLITE) --objects 100k --order $$o; \
	done
	@set -e; for u in $(UNIT_TRACES); do \
	  for n in 10k 100k; do \
	    $(SUITE) $(BENCH_OUT)/full units-$${u%%:*}-$$n $(BENCH_REPEAT) --trace $${u#*:} --objects $$n \
	      --max-object-size $${u%%:*}; \
	  done; \
	done
	@mkdir -p $(BENCH_RESULTS)
	$(PYTHON) bench/compare.py --machine --out $(BENCH_RESULTS)/table.md \
	  --speed-phases fill,read,free,churn $(BENCH_OUT)/full
	$(VPY) bench/chart.py --out $(BENCH_RESULTS)/chart.png $(BENCH_OUT)/full

test-bench: bench-bin $(ZSHOT)
	@$(BENCH_ENV) ZSHOT=$(ZSHOT) TRACE_DIR=data/workloads sh bench/smoke.sh

$(ZSHOT): bench/hot.c $(HEADER) $(LIB_SO)
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -pthread -Iinclude -o $@ bench/hot.c \
		-L$(LIBDIR) -lzsmalloc -Wl,-rpath,$(abspath $(LIBDIR)) -ldl

# HOT_RUNS runs with each malloc as the baseline (glibc's, then jemalloc and mimalloc
# preloaded where installed), the mallocs alternating from run to run: a process's
# figures move together when other work takes its CPU, so one run each can mislead.
# bench/results/hot.md gives each malloc's medians (bench/hot_median.py), then every run.
.PHONY: bench-hot
bench-hot: $(ZSHOT)
	@mkdir -p $(BENCH_OUT)/hot $(BENCH_RESULTS)
	@rm -f $(BENCH_OUT)/hot/*.txt
	@set -e; for r in $$(seq $(HOT_RUNS)); do \
	  for m in glibc jemalloc:$(JEMALLOC) mimalloc:$(MIMALLOC); do \
	    name=$${m%%:*}; lib=$${m#*:}; \
	    case $$m in *:) test $$r -gt 1 || echo "$$name: not installed, left out"; continue;; esac; \
	    test "$$name" = glibc && lib=; \
	    echo "== $$name, run $$r of $(HOT_RUNS)"; \
	    LD_PRELOAD=$$lib $(ZSHOT) --trace $(TRACE_NODE) --rounds $(HOT_ROUNDS) | tee $(BENCH_OUT)/hot/$$name.$$r.txt; \
	  done; \
	done
	@set -e; { echo "# The C ABI's fast paths against their baselines (\`make bench-hot\`, bench/hot.c)"; echo; \
	  for m in glibc jemalloc mimalloc; do \
	    ls $(BENCH_OUT)/hot/$$m.*.txt >/dev/null 2>&1 || continue; \
	    echo '```'; $(PYTHON) bench/hot_median.py $(BENCH_OUT)/hot/$$m.*.txt; echo '```'; echo; \
	  done; \
	  echo "## Every run"; echo; \
	  for f in $(BENCH_OUT)/hot/*.txt; do echo '```'; cat $$f; echo '```'; echo; done; } > $(BENCH_RESULTS)/hot.md
	@echo "written: $(BENCH_RESULTS)/hot.md"

bench: bench-hot
