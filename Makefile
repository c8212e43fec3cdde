# flow-pipeline. `make test` is what CI runs (after .ci/run has installed and
# started what the tests need); `make demo` runs the pipeline without Docker.

GO       ?= go
BIN      := bin
TOOLS    := .cache/bin
# protoc-gen-go is pinned to the google.golang.org/protobuf version in go.mod.
PROTOC_GEN_GO_VERSION := v1.36.12

.PHONY: all build test bench demo proto kafka-libs goflow2 geodata clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

# Every test: unit tests on the in-process broker, integration tests on a
# real Apache Kafka 4 broker and throwaway PostgreSQL servers, ClickHouse
# schema tests on chDB. Missing services skip loudly, or fail when
# FLOWPIPELINE_REQUIRE_SERVICES=1 (CI).
test: kafka-libs goflow2 geodata
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
