package pgsink_test

import (
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// BenchmarkAddFlow measures encoding one flow as a binary COPY row plus
// its rollup entry: the per-flow cost of the writer's input, for plain
// flows and for the same flows enriched (flowtest.Enrich, decoded from the
// enricher's framing as the inserter reads it).
func BenchmarkAddFlow(b *testing.B) {
	for _, enriched := range []bool{false, true} {
		name := "plain"
		if enriched {
			name = "enriched"
		}
		b.Run(name, func(b *testing.B) {
			g := flowtest.NewGen(1)
			msgs := make([]*pb.FlowMessage, 1024)
			base := time.Now().Add(-time.Hour)
			var e pb.Enrichment
			for i := range msgs {
				msgs[i] = &pb.FlowMessage{}
				g.Next(msgs[i], base.Add(time.Duration(i)*time.Millisecond))
				if enriched {
					flowtest.Enrich(msgs[i], &e)
					framed := pb.AppendEnrichedFrame(nil, msgs[i].AppendWire(nil), &e)
					if err := pb.UnmarshalRecord(framed, msgs[i], func(*pb.FlowMessage) error { return nil }); err != nil {
						b.Fatal(err)
					}
				}
			}
			batch := pgsink.NewBatch("flows", 0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%20000 == 0 {
					batch.Reset("flows", 0)
				}
				batch.BeginRecord(int64(i))
				batch.AddFlow(msgs[i%len(msgs)])
				batch.EndRecord()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}
