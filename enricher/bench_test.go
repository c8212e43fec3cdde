package enricher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/geotest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// BenchmarkTransform is the enrichment of one flow with every source
// loaded, Kafka aside.
func BenchmarkTransform(b *testing.B) {
	l, _ := loadSet(b)
	tr := NewTransform(l, Options{})
	values, tot := flowtest.Records(7, 10000, 1, time.Now().Add(-time.Hour))
	buf := make([]byte, 0, 4<<20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := values[i%len(values)]
		if i%len(values) == 0 {
			buf = buf[:0]
			tr.EndBatch()
		}
		buf, _, _ = tr.Transform(buf, v)
	}
	_ = tot
}

// pipelineRun moves n flows (perRecord a record) through a fresh kfake
// cluster with exactly-once on, and returns the flows per second from
// the pipeline's start to the last flow's commit.
func pipelineRun(b *testing.B, tr Transformer, n, perRecord int) float64 {
	brokers := testenv.FakeKafka(b, 3, "flows", "flows-enriched")
	values, _ := flowtest.Records(3, n, perRecord, time.Now().Add(-time.Hour))
	flowtest.Produce(b, brokers, "flows", values)
	cfg := DefaultConfig()
	cfg.Brokers, cfg.TransactionalID = brokers, "bench"
	reg := prometheus.NewRegistry()
	p, err := NewPipeline(cfg, tr, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(ctx) }()
	for testutil.ToFloat64(p.m.flowsOut) < float64(n) {
		select {
		case err := <-done:
			b.Fatalf("Run returned %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%v of %d flows out after 5 minutes", testutil.ToFloat64(p.m.flowsOut), n)
		}
	}
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return float64(n) / elapsed.Seconds()
}

// BenchmarkPipeline runs the whole pipeline on kfake with exactly-once on,
// passthrough (enrichment off: messages decoded, bytes copied) and with
// every source loaded, alternately, three times each, and reports the best
// rate of each and their ratio. The target: ratio >= 0.7.
func BenchmarkPipeline(b *testing.B) {
	for _, perRecord := range []int{1, 10} {
		b.Run(fmt.Sprintf("flows_per_record=%d", perRecord), func(b *testing.B) {
			const n = 200_000
			var pass, enrich float64
			for range b.N {
				for range 3 {
					pass = max(pass, pipelineRun(b, new(Passthrough), n, perRecord))
					l, err := sources.NewLoader(geotest.Write(b, b.TempDir()), nil, nil)
					if err != nil {
						b.Fatal(err)
					}
					enrich = max(enrich, pipelineRun(b, NewTransform(l, Options{}), n, perRecord))
				}
			}
			b.ReportMetric(pass, "passthrough_flows/s")
			b.ReportMetric(enrich, "enrich_flows/s")
			b.ReportMetric(enrich/pass, "ratio")
		})
	}
}
