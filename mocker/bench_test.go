package mocker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/internal/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// BenchmarkGenerate measures the per-flow cost of making a record value:
// Next plus the length-delimited encoding.
func BenchmarkGenerate(b *testing.B) {
	g := NewGenerator(1)
	var m pb.FlowMessage
	buf := make([]byte, 0, 256)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		g.Next(&m, now)
		buf, _ = pb.AppendDelimited(buf[:0], &m)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkProduce sends b.N flows, as fast as possible, to an in-process
// kfake cluster and waits for every ack.
func BenchmarkProduce(b *testing.B) {
	brokers := testenv.FakeKafka(b, 6, "flows")
	m, err := New(Config{Brokers: brokers, Count: uint64(b.N), ProgressInterval: -1},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if m.Produced() != uint64(b.N) {
		b.Fatalf("produced %d flows, want %d", m.Produced(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}
