package mocker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// BenchmarkGenerate measures the per-flow cost of making a record value:
// Next plus the length-delimited encoding, in the documentation address
// plan and in the realistic one (the mocker's default) with the demo files.
func BenchmarkGenerate(b *testing.B) {
	b.Run(AddressesDocumentation, func(b *testing.B) { benchGenerate(b, NewGenerator(1)) })
	b.Run(AddressesRealistic, func(b *testing.B) {
		p, err := DemoPlan()
		if err != nil {
			b.Fatal(err)
		}
		benchGenerate(b, NewPlanGenerator(1, p))
	})
}

func benchGenerate(b *testing.B, g *Generator) {
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

// benchFlowsPerRecord are the record sizes the produce benchmarks compare:
// goflow2's one flow per record and a load-test setting.
var benchFlowsPerRecord = []int{1, 10}

// BenchmarkProduce sends b.N flows, as fast as possible, to an in-process
// kfake cluster and waits for every ack.
func BenchmarkProduce(b *testing.B) {
	for _, per := range benchFlowsPerRecord {
		b.Run(fmt.Sprintf("flows_per_record=%d", per), func(b *testing.B) {
			brokers := testenv.FakeKafka(b, 6, "flows")
			benchProduce(b, Config{Brokers: brokers, FlowsPerRecord: per})
		})
	}
}

// BenchmarkProduceRealKafka is BenchmarkProduce against a real Apache Kafka
// broker on this machine, which runs in its own process (started once, one
// topic per run).
func BenchmarkProduceRealKafka(b *testing.B) {
	kafka := testenv.StartKafka(b)
	for _, per := range benchFlowsPerRecord {
		b.Run(fmt.Sprintf("flows_per_record=%d", per), func(b *testing.B) {
			topic := testenv.UniqueName(b)
			kafka.CreateTopic(b, topic, 6)
			benchProduce(b, Config{Brokers: kafka.Brokers(), Topic: topic,
				KafkaVersion: kafka.SaramaVersion().String(), FlowsPerRecord: per})
		})
	}
}

// benchProduce runs a Mocker producing b.N flows with cfg and reports flows
// and records per second.
func benchProduce(b *testing.B, cfg Config) {
	cfg.Count, cfg.ProgressInterval = uint64(b.N), -1
	m, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
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
	per := m.cfg.FlowsPerRecord
	records := (b.N + per - 1) / per
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}
