package clickhouse_test

import (
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// BenchmarkInsertFlows measures the ingest path of the schema on one core
// of chDB: Protobuf decoding of framed FlowMessages, the flows → flows_raw
// view (address and time conversions) and both rollup views. It includes
// writing the input file and the round trip to the python3 process.
func BenchmarkInsertFlows(b *testing.B) {
	s := schemaDB(b, false)
	const n = 50000
	var buf []byte
	for _, m := range mockMessages(mockSeed, n, time.Now().Add(-time.Hour), time.Hour) {
		var err error
		if buf, err = pb.AppendDelimited(buf, m); err != nil {
			b.Fatal(err)
		}
	}
	schema := protoSchema(b)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.InsertProtobuf("flows", buf, schema); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	if got := count(b, s, "flows_raw"); got != uint64(n*b.N) {
		b.Fatalf("flows_raw has %d rows, want %d", got, n*b.N)
	}
}
