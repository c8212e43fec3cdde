# flow-pipeline. `make test` is what CI runs (after .ci/run has installed and
# started what the tests need); `make demo` runs the pipeline without Docker.

GO       ?= go
BIN      := bin
TOOLS    := .cache/bin
# protoc-gen-go is pinned to the google.golang.org/protobuf version in go.mod.
PROTOC_GEN_GO_VERSION := v1.36.12

.PHONY: all build test bench bench-collect demo proto kafka-libs goflow2 prometheus geodata clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

# Every test: unit tests on the in-process broker, integration tests on a
# real Apache Kafka 4 broker and throwaway PostgreSQL servers, ClickHouse
# schema tests on chDB. Missing services skip loudly, or fail when
# FLOWPIPELINE_REQUIRE_SERVICES=1 (CI).
test: kafka-libs goflow2 prometheus geodata
	$(GO) test -count=1 -timeout 25m ./...

# Throughput benchmarks; compare the figures of one run side by side.
# Encoding and generation on one core; producing and draining with all.
bench: kafka-libs geodata
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 ./pb/
	$(GO) test -run '^$$' -bench Generate -benchmem -cpu 1 ./mocker/
	$(GO) test -run '^$$' -bench Produce -benchtime 1000000x -benchmem ./mocker/
	$(GO) test -run '^$$' -bench 'Decode|AddFlow' -benchmem ./inserter/...
	$(GO) test -run '^$$' -bench 'Drain1M|DrainEnriched1M' -benchtime 1x -timeout 30m ./inserter/
	$(GO) test -run '^$$' -bench Lookup -benchmem -cpu 1 ./enricher/sources/
	$(GO) test -run '^$$' -bench Transform -benchmem -cpu 1 ./enricher/
	$(GO) test -run '^$$' -bench Pipeline -benchtime 1x -timeout 30m ./enricher/
	$(GO) test -run '^$$' -bench 'Detect|EngineAdd' -benchtime 3000000x -benchmem -cpu 1 ./detector/
	$(MAKE) bench-collect

# The collect path under load, on real programs: the highest rate at which
# goflow2 -> Kafka -> inserter -> PostgreSQL keeps up with no datagram lost
# (stepping the rate), and p50/p99 latency from time_received to the commit
# at 20,000 flows/s, each next to the Kafka-direct mocker (docs/benchmarks.md).
bench-collect: kafka-libs goflow2
	$(GO) test -run '^$$' -bench Collect -benchtime 1x -timeout 30m ./internal/testkit/e2e/

# Built, then run, rather than `go run`, which exits 1 on Ctrl-C. Ctrl-C
# reaches make too: make waits for the demo's clean shutdown and summary,
# then exits 130 whatever the demo returned; for the demo's own exit code
# on Ctrl-C, run bin/demo directly. Without Ctrl-C (-duration), make exits
# 0, or 2 when the demo failed.
demo:
	$(GO) build -o $(BIN)/demo ./cmd/demo
	$(BIN)/demo $(DEMO_FLAGS)

# Regenerate pb/flow.pb.go from pb/flow.proto (needs Debian's protobuf-compiler).
proto: $(TOOLS)/protoc-gen-go
	PATH="$(abspath $(TOOLS)):$$PATH" protoc -I pb --go_out=pb --go_opt=paths=source_relative pb/flow.proto

$(TOOLS)/protoc-gen-go:
	GOBIN="$(abspath $(TOOLS))" $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

# The real collector, built from the Go module proxy, for the end-to-end test
# that replays router captures through it.
GOFLOW2_VERSION := v2.2.6
goflow2: $(TOOLS)/goflow2-$(GOFLOW2_VERSION)
$(TOOLS)/goflow2-$(GOFLOW2_VERSION):
	GOFLAGS= GOBIN="$(abspath $(TOOLS))" $(GO) install github.com/netsampler/goflow2/v2/cmd/goflow2@$(GOFLOW2_VERSION)
	mv $(TOOLS)/goflow2 $@

# The real Prometheus, for the test that runs every PromQL query of the
# Pipeline dashboard against the real programs. Module v0.313.2 is release
# 3.13.2, the compose stacks' image (prom/prometheus:v3.13.2); move both
# together. Its go.mod has replace directives, which `go install pkg@version`
# refuses, so the module is downloaded and built in place (read-only, like
# any module in the cache). About 4 minutes on 2 cores, once.
PROMETHEUS_VERSION := v0.313.2
prometheus: $(TOOLS)/prometheus-$(PROMETHEUS_VERSION)
$(TOOLS)/prometheus-$(PROMETHEUS_VERSION):
	mkdir -p $(TOOLS)
	cd / && GOFLAGS= $(GO) mod download github.com/prometheus/prometheus@$(PROMETHEUS_VERSION)
	cd "$$($(GO) env GOMODCACHE)/github.com/prometheus/prometheus@$(PROMETHEUS_VERSION)" && \
		GOWORK=off GOFLAGS=-buildvcs=false $(GO) build -trimpath -o "$(abspath $@).tmp" ./cmd/prometheus
	mv $@.tmp $@

# Apache Kafka jars from Maven Central for the integration tests.
kafka-libs:
	bash .ci/kafka/fetch.sh

# Open IP data (ip-location-db, pinned npm packages) for the enricher's
# integration test and benchmarks, into .cache/geodata; prints the licences.
# Without npm it warns and the tests that need the data skip (fail in CI).
geodata:
	bash .ci/geodata/fetch.sh

clean:
	rm -rf $(BIN)
