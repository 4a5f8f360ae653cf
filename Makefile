# Shukei: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/shukei
DEMO_ARGS ?=
BENCH_EVENTS ?= 10000000
BENCH_PIPELINE_EVENTS ?= 500000
# Integration tests fail instead of skipping when a service is missing.
TEST_ENV := SHUKEI_TEST_REQUIRE_SERVICES=1
FUZZTIME ?= 30s
# What a verbose test run shows: each test's start and result, its log lines (file:line), and
# the package's verdict; the targets below add the summary lines they report (lost=, ...).
SHOWN := ^(=== RUN|--- |PASS|FAIL|ok|panic)|\.go:[0-9]+:

.PHONY: all build demo test test-unit test-sdk-js test-faults test-faults-processor test-faults-aggregator test-faults-stack test-cluster attack-cluster attack-exactly-once attack-marts-cut attack-marts-cut-burst bench lint fuzz services-up services-down services-status cluster-up cluster-down clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/shukei

## The main job: services up, a master key for pseudonymisation (kept out of git), then the demo
## from nothing (--fresh drops its database and topics first).
MASTER_KEY ?= .services/master.key
demo: services-up build
	@$(BIN) keys init --file $(MASTER_KEY) >/dev/null
	SHUKEI_ANONYMIZER_MASTER_KEY_FILE=$(MASTER_KEY) SHUKEI_CLICKHOUSE_USERS_DIR=$$(cat .services/clickhouse.dir)/users.d \
	  $(BIN) demo --fresh $(DEMO_ARGS)

## Every test, against the real Kafka and ClickHouse that services-up starts. The TypeScript
## SDK is built and unit-tested first; a Go test then runs its integration test against a real
## collector.
test: services-up lint test-sdk-js
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 20m ./...
	@# The tests that skip or shrink under -race: the DP statistical tests (they only draw
	@# noise) and the demo's two whole runs (CPU-bound under the detector).
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m -run 'TestUtilityTargets|TestNeighbouringMonthReleases|TestDoubleCloseNeighbours|TestNonNegativeBias|TestReleasedCellMovesByAtMostLInfPlusNoise|TestOneTenantMovesACellByAtMostLInf|TestNoiseMeanAndVariance|TestNeighbouringDatasets|TestDemoOnRealServices' -v ./aggregator/ ./anonymizer/dp/ ./cmd/shukei/ 2>&1 | grep -E '$(SHOWN)'; exit $${PIPESTATUS[0]}
	$(MAKE) test-faults-processor
	@# The aggregator's fault suite restarts no service and the cluster's tests only read the
	@# single-node services, so the two run side by side (each mostly waits on windows and
	@# faults: the aggregator suite used half a core over its 11 minutes here); -O holds each
	@# one's output until it is done.
	$(MAKE) -j2 -O test-faults-aggregator test-cluster
	$(MAKE) test-faults-stack

## Fault tests kill processes and restart ClickHouse and Kafka, so they run alone, after the
## others, one package at a time (-p 1: each restarts services under the others) (build tag
## "faults"). ./faults is the whole stack under one load; the other two look closer at one role,
## and the aggregator's release attacks (aggregator/ATTACK-RELEASE.md) pause and resume it.
test-faults:
	$(MAKE) test-faults-processor
	$(MAKE) test-faults-aggregator
	$(MAKE) test-faults-stack

## The processor killed five times and ClickHouse restarted under it.
test-faults-processor: services-up
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 20m -tags faults -run 'Kills' -v ./pipeline/processor/ 2>&1 | grep -E '$(SHOWN)|lost=|DLQ:'; exit $${PIPESTATUS[0]}

## The aggregator killed, paused and resumed (it restarts no service).
test-faults-aggregator: services-up
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 20m -tags faults -run 'Kills|TestAttack' -v ./aggregator/ 2>&1 | grep -E '$(SHOWN)|aggregator faults:'; exit $${PIPESTATUS[0]}

## The whole stack under faults, and the two attacks that kill or stop ClickHouse under inserts.
test-faults-stack: services-up
	@# The whole-stack test's roles are subprocesses (built without -race); -race would only
	@# slow its harness (in CI: 342 s with it, 272 s without, over a longer load).
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m -tags faults -run 'Faults' -v ./faults/ 2>&1 | grep -E '$(SHOWN)|stack faults:'; exit $${PIPESTATUS[0]}
	$(MAKE) attack-exactly-once
	$(MAKE) attack-marts-cut

## The cluster (scripts/cluster.sh): ZooKeeper, ClickHouse as two shards of two replicas, three
## Kafka brokers, on ports of their own beside the single-node services. test-cluster holds it
## to what Shukei's cluster mode needs: distributed DDL, sharding by tenant, replicas that catch
## up after a stop, acks=all writes through the loss of a partition leader's broker.
cluster-up:
	scripts/services.sh up --cluster

cluster-down:
	scripts/services.sh down --cluster

## It stops the cluster afterwards, pass or fail: eight processes, about 3 GB. The whole-stack
## test on the cluster (TestClusterStackSurvivesFaults) also replays its events through the
## single-node services, so they are started too.
test-cluster: services-up cluster-up
	$(TEST_ENV) $(GO) test -count=1 -timeout 25m -tags cluster -run 'TestCluster' -v ./faults/ 2>&1 | grep -E '$(SHOWN)|stack faults:'; \
	  rc=$${PIPESTATUS[0]}; \
	  $(TEST_ENV) $(GO) test -count=1 -timeout 20m -tags cluster -run 'TestClusterDeletionOnEveryReplica|TestClusterRoleMatrixOnEveryNode' -v ./attack/ 2>&1 | grep -E '$(SHOWN)'; \
	  rc2=$${PIPESTATUS[0]}; scripts/services.sh down --cluster; [ $$rc -eq 0 ] && [ $$rc2 -eq 0 ]

## The whole blind attack on promises 16 and 19 on the cluster (attack/CLUSTER.md,
## attack/CLUSTER-INTERNAL.md, attack/CLUSTER-READERS.md). make test-cluster runs the deletion
## and role-matrix attacks; TestClusterInternalUser and TestClusterReadUsersStayInTheirRow are
## not in make test yet: they fail on open findings (docs/promises.md, promises 16 and 19), kept
## failing until the code is fixed.
attack-cluster: cluster-up
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m -tags cluster -run 'TestCluster' -v ./attack/ 2>&1 | grep -E '$(SHOWN)'; exit $${PIPESTATUS[0]}

## The blind attack on promise 20 (attack/MARTS-CUT.md): ClickHouse SIGKILLed the instant an
## insert's event-store part (or the k-th mart part, or a repair's part) lands, processors
## killed or stopped mid-repair; every mart must equal its view over the event store. Run by
## test-faults (it kills ClickHouse).
attack-marts-cut: services-up
	$(TEST_ENV) $(GO) test -count=1 -timeout 15m -tags faults -run 'TestAttackMartsExactAfterCutInserts' -v ./attack/ 2>&1 | grep -E '$(SHOWN)'; exit $${PIPESTATUS[0]}

## The second blind attack on promise 20 (attack/MARTS-CUT-BURST.md): batches of 100 ms, cuts
## aimed at the second or third insert of one instance and partition within one second. About 4
## minutes on a quiet machine; not in make test (CI time): run it after changing the repair.
attack-marts-cut-burst: services-up
	$(TEST_ENV) $(GO) test -count=1 -timeout 20m -tags faults -run 'TestAttackMartsExactAfterCutBursts' -v ./attack/ 2>&1 | grep -E '$(SHOWN)'; exit $${PIPESTATUS[0]}

## The blind attack on promise 3 under interruptions at an insert's worst moment
## (attack/EXACTLY-ONCE.md): three processors SIGSTOPped or SIGKILLed, and ClickHouse stopped or
## killed, when an insert opens or its data goes out. Run by test-faults (it restarts ClickHouse).
attack-exactly-once: services-up
	$(TEST_ENV) $(GO) test -count=1 -timeout 15m -tags faults -run 'TestAttackExactlyOnceUnderInterruptions' -v ./attack/ 2>&1 | grep -E '$(SHOWN)'; exit $${PIPESTATUS[0]}

test-sdk-js:
	cd sdk/js && npm ci --no-audit --no-fund --loglevel=error && npm test

## Tests that need no service (the integration ones skip unless CI is set).
test-unit:
	$(GO) test -race -count=1 ./...

## Benchmarks: Go benchmarks (hot paths, the processor against a raw-copy baseline in the same
## run, and a report's latency idle and under a flood of 10^5 requests without a token,
## query/flood_test.go), the DP utility report, and report latency over 10 million stored
## events (the bench database is filled once and reused).
bench: services-up build
	@$(BIN) keys init --file $(MASTER_KEY) >/dev/null
	$(TEST_ENV) $(GO) test -run '^$$' -bench . -benchmem -count=1 ./...
	$(BIN) aggregator --report
	SHUKEI_ANONYMIZER_MASTER_KEY_FILE=$(MASTER_KEY) SHUKEI_CLICKHOUSE_USERS_DIR=$$(cat .services/clickhouse.dir)/users.d \
	  $(BIN) bench reports --events $(BENCH_EVENTS)
	SHUKEI_ANONYMIZER_MASTER_KEY_FILE=$(MASTER_KEY) SHUKEI_CLICKHOUSE_USERS_DIR=$$(cat .services/clickhouse.dir)/users.d \
	  $(BIN) bench pipeline --events $(BENCH_PIPELINE_EVENTS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags faults ./...
	$(GO) vet -tags cluster ./faults/ ./attack/

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f ($(FUZZTIME))"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

clean:
	rm -rf bin
