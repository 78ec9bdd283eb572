# The random API-sequence fuzzer (c_tests/fuzz_api.c): valid and invalid calls mixed
# against a shadow model of every object, in both layouts, single-threaded and with a
# second thread doing misuse while the first works.
#
#   make test-fuzz          a bounded run under ASan + UBSan (FUZZ_TEST_SECONDS in all,
#                           12 by default: 2 for each of the six sessions), then a short one built without sanitizers,
#                           where a destroyed pool's address can come back
#   make fuzz SECONDS=N     a long run under ASan + UBSan (60 s by default); SEED=S
#                           runs a given seed
#
# The seed is printed first. A failure names the session and the operation at which it
# happened: `fuzz_api --seed S --session K --ops N` replays it, and FUZZ_TRACE=1 in the
# environment prints every call.

FUZZ_DIR          := $(BUILD)/fuzz
FUZZ_TEST_SECONDS ?= 12
SECONDS           ?= 60
FUZZ_SEED_ARG      = $(if $(SEED),--seed $(SEED))

TEST_TARGETS += test-fuzz

.PHONY: test-fuzz fuzz fuzz-build

fuzz-build: build
	@mkdir -p $(FUZZ_DIR)
	$(CC) $(CT_CFLAGS) $(CT_ASAN) -o $(FUZZ_DIR)/fuzz_api c_tests/fuzz_api.c $(CT_LDLIBS)
	$(CC) $(CT_CFLAGS) -O2 -g -o $(FUZZ_DIR)/fuzz_api_native c_tests/fuzz_api.c $(CT_LDLIBS)

test-fuzz: fuzz-build
	$(CT_ASAN_ENV) $(FUZZ_DIR)/fuzz_api --seconds $(FUZZ_TEST_SECONDS) $(FUZZ_SEED_ARG)
	$(FUZZ_DIR)/fuzz_api_native --seconds 2 $(FUZZ_SEED_ARG)

fuzz: fuzz-build
	$(CT_ASAN_ENV) $(FUZZ_DIR)/fuzz_api --seconds $(SECONDS) $(FUZZ_SEED_ARG)
