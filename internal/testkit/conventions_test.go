package testkit_test

import (
	"io"
	"log/slog"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// recorder is a prometheus.Registerer that keeps every metric name
// registered, labelled vectors without children included.
type recorder struct {
	prometheus.Registerer
	names []string
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names = append(r.names, m[1])
		}
	}
	return r.Registerer.Register(c)
}

// metricName is docs/conventions.md's rule:
// flowpipeline_<component>_<what>_<unit|total>, where the unit is a base
// unit or the thing counted, and a 0/1 state gauge is named for the state.
var metricName = regexp.MustCompile(`^flowpipeline_(mocker|inserter|enricher|detector)_[a-z0-9_]+_(total|seconds|bytes|flows|records|attacks|partitions)$|^flowpipeline_(mocker|inserter|enricher|detector)_ready$`)

func TestMetricNames(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec := &recorder{Registerer: prometheus.NewRegistry()}
	if _, err := mocker.New(mocker.Config{Brokers: []string{"127.0.0.1:1"}}, logger, rec); err != nil {
		t.Fatal(err)
	}
	nMocker := len(rec.names)
	if _, err := inserter.New(inserter.Config{Brokers: []string{"127.0.0.1:1"}, PostgresDSN: "postgres://u@127.0.0.1:1/db"}, logger, rec); err != nil {
		t.Fatal(err)
	}
	nInserter := len(rec.names) - nMocker
	cfg := enricher.DefaultConfig()
	if _, err := enricher.NewPipeline(cfg, &enricher.Passthrough{}, logger, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := sources.NewLoader(sources.DefaultConfig(), logger, rec); err != nil {
		t.Fatal(err)
	}
	nEnricher := len(rec.names) - nMocker - nInserter
	if _, err := detector.New(detector.DefaultConfig(), logger, rec); err != nil {
		t.Fatal(err)
	}
	nDetector := len(rec.names) - nMocker - nInserter - nEnricher
	if nMocker < 4 || nInserter < 10 || nEnricher < 9 || nDetector < 10 {
		t.Fatalf("saw only %d mocker, %d inserter, %d enricher and %d detector metrics: %q", nMocker, nInserter, nEnricher, nDetector, rec.names)
	}
	for _, name := range rec.names {
		if !metricName.MatchString(name) {
			t.Errorf("metric %s breaks the naming convention flowpipeline_<component>_<what>_<unit|total> (docs/conventions.md)", name)
		}
	}
	for _, bad := range []string{"flowpipeline_mocker_flows_inflight", "mocker_flows_total", "flowpipeline_inserter_batch_duration_ms"} {
		if metricName.MatchString(bad) {
			t.Errorf("the convention check accepts %s", bad)
		}
	}
}
