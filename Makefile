# Tally — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
BIN       := bin/tally
INFRA     := deploy/local/infra.sh
# Integration tests find the services through these (defaults: the local ones `make up` starts).
export TALLY_TEST_KAFKA_BROKERS    ?= 127.0.0.1:9092
export TALLY_TEST_CLICKHOUSE_ADDR  ?= 127.0.0.1:9000
export TALLY_TEST_CLICKHOUSE_HTTP  ?= 127.0.0.1:8123
GOTESTFLAGS ?=

.PHONY: help build up down status cluster-up cluster-down lint browser test test-unit bench demo chaos test-cluster clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build bin/tally
	$(GO) build -o $(BIN) ./cmd/tally

up: build ## install (cached) and start Kafka + ClickHouse locally; waits until both answer
	$(INFRA) up

demo: up ## two months of traffic through the whole pipeline on a virtual clock; bills checked against replay
	bin/tally demo

down: ## stop the Kafka and ClickHouse processes `make up` started
	$(INFRA) down

status: ## show what runs where
	@$(INFRA) status

cluster-up: build ## a 3-node Kafka cluster (KRaft, RF 3, min ISR 2) on ports 19092-19094, beside `make up`'s
	$(INFRA) cluster-up

cluster-down: ## stop the nodes `make cluster-up` started
	$(INFRA) cluster-down

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PROMTOOL    := github.com/prometheus/prometheus/cmd/promtool@v0.316.0

lint: ## go vet, staticcheck (pinned), a gofmt check, and promtool on the alerting rules
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(PROMTOOL) check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && $(GO) run $(PROMTOOL) test rules alerts_test.yml

browser: ## install Debian's Chromium (pinned, with apt, as root) for the account page's browser test
	deploy/local/chromium.sh

test: up browser lint ## start services if needed, vet, and run every test (unit + integration) with -race
	$(GO) test -race -shuffle=on -timeout 30m $(GOTESTFLAGS) ./...

test-unit: ## tests that need no services (integration tests skipped)
	TALLY_SKIP_INTEGRATION=1 $(GO) test -race -shuffle=on ./...

chaos: up ## the fault-injection tests alone, verbose: roles SIGKILLed, a test broker killed and restarted (make test runs them too)
	$(GO) test -v -count=1 -timeout 30m -run 'TestBillingSurvivesServiceRestarts|TestSettleWorkerSurvivesSIGKILL|TestAggregateSurvivesSIGKILL|TestFollowRidesOutABrokerRestart|TestPingTellsWhenTheBrokerIsDown|TestSinkRidesOutAClickHouseRestart' \
		./settle/worker ./aggregate/worker ./internal/kafkax ./ingest/sink

test-cluster: up ## the tests on a 3-node Kafka cluster alone, verbose: migrate's replication, ingest readiness, broker kills under billing (make test runs them too)
	$(GO) test -v -count=1 -timeout 30m -run 'TestBillingSurvivesBrokerKillsOnAThreeNodeCluster|TestReplicaWatchSeesANodeGoOnARealCluster|TestMigrateReplicatesTopicsOnACluster' \
		./settle/worker ./ingest ./cmd/tally

bench: up ## micro-benchmarks, the pipeline under load (batches of 100, 1000, 1) and a settled month: one table, appended to BENCHMARKS.md
	deploy/bench/bench.sh

clean: ## remove build output (not the caches, not .state)
	rm -rf bin
