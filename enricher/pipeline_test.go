package enricher

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/geotest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// metric sums the series of name whose labels include labels (pairs).
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return flowtest.Metric(t, reg, name, labels...)
}

// drain reads topic read_committed from the start until want records came
// and a second passed without more, returning the record values and their
// headers' "reason" values.
func drain(t testing.TB, brokers []string, topic string, want int) (values [][]byte, reasons map[string]int, parts []int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reasons = map[string]int{}
	deadline := time.Now().Add(time.Minute)
	quiet := time.Time{}
	for {
		if len(values) >= want {
			if quiet.IsZero() {
				quiet = time.Now().Add(time.Second)
			} else if time.Now().After(quiet) {
				return values, reasons, parts
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d records after a minute, want %d", topic, len(values), want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			values = append(values, r.Value)
			parts = append(parts, r.Partition)
			for _, h := range r.Headers {
				if h.Key == "reason" {
					reasons[string(h.Value)]++
				}
			}
		})
		cancel()
	}
}

// TestPipelineDeadLetters: good records come out enriched, in order per
// partition; junk of every kind is counted by reason and copied to the
// dead-letter topic, exactly once each, without blocking its partition.
func TestPipelineDeadLetters(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "flows", "flows-enriched", "dlq")
	good, tot := flowtest.Records(1, 3000, 3, time.Now().Add(-time.Hour))
	junk, reasons := flowtest.Corrupt(2, 60, good[0])
	values := make([][]byte, 0, len(good)+len(junk))
	for i, v := range good { // junk interleaved with good records
		values = append(values, v)
		if i%16 == 0 && i/16 < len(junk) {
			values = append(values, junk[i/16])
		}
	}
	values = append(values, junk[min(len(junk), len(good)/16+1):]...)
	flowtest.Produce(t, brokers, "flows", values)

	reg := prometheus.NewRegistry()
	l, err := sources.NewLoader(geotest.Write(t, t.TempDir()), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Brokers, cfg.DLQTopic, cfg.TransactionalID = brokers, "dlq", "t1"
	cfg.TransactionInterval, cfg.TransactionRecords = 100*time.Millisecond, 500
	p, err := NewPipeline(cfg, NewTransform(l, Options{}), testLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	outValues, _, outParts := drain(t, brokers, "flows-enriched", len(good))
	dead, deadReasons, _ := drain(t, brokers, "dlq", len(junk))
	inValues, _, inParts := drain(t, brokers, "flows", len(values))
	if n, lag := testutil.CollectAndCount(p.m.lag), metric(t, reg, "flowpipeline_enricher_lag_records"); n != 3 || lag != 0 {
		t.Errorf("lag: %d partitions, %v records in all; want 3 partitions, 0", n, lag)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	var flows int64
	var m pb.FlowMessage
	for _, v := range outValues {
		if err := pb.UnmarshalRecord(v, &m, func(m *pb.FlowMessage) error {
			flows++
			if m.SrcCountry == "" && m.ExporterName == "" {
				t.Fatalf("flow %d is not enriched", flows)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Partition p's good records come out on partition p, in order.
	seqs := func(values [][]byte, parts []int32) map[int32][]uint32 {
		out := map[int32][]uint32{}
		for i, v := range values {
			var rec []uint32
			if pb.UnmarshalRecord(v, &m, func(m *pb.FlowMessage) error {
				rec = append(rec, m.SequenceNum)
				return nil
			}) == nil { // junk records are not in the output
				out[parts[i]] = append(out[parts[i]], rec...)
			}
		}
		return out
	}
	inSeqs, outSeqs := seqs(inValues, inParts), seqs(outValues, outParts)
	for part, want := range inSeqs {
		if !slices.Equal(outSeqs[part], want) {
			t.Errorf("partition %d: %d flows out, want the %d flows of input partition %d in order", part, len(outSeqs[part]), len(want), part)
		}
	}
	if len(outValues) != len(good) || flows != tot.Flows {
		t.Errorf("output: %d records, %d flows; want %d, %d", len(outValues), flows, len(good), tot.Flows)
	}
	if len(dead) != len(junk) {
		t.Errorf("dead letters: %d records, want %d", len(dead), len(junk))
	}
	for r, n := range reasons {
		if deadReasons[r] != n {
			t.Errorf("dead letters with reason %s: %d, want %d", r, deadReasons[r], n)
		}
		if got := metric(t, reg, "flowpipeline_enricher_records_invalid_total", "reason", r); got != float64(n) {
			t.Errorf("records_invalid_total{reason=%s} %v, want %d", r, got, n)
		}
	}
	for name, want := range map[string]float64{
		"flowpipeline_enricher_flows_out_total":       float64(tot.Flows),
		"flowpipeline_enricher_dead_letters_total":    float64(len(junk)),
		"flowpipeline_enricher_records_invalid_total": float64(len(junk)),
		"flowpipeline_enricher_ready":                 0, // after Run returned
	} {
		if got := metric(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if c := metric(t, reg, "flowpipeline_enricher_transactions_total", "result", "committed"); c < 2 {
		t.Errorf("%v transactions committed, want several (bounded at 500 records)", c)
	}
	if a := metric(t, reg, "flowpipeline_enricher_transactions_total", "result", "aborted"); a != 0 {
		t.Errorf("%v transactions aborted, want 0", a)
	}
	// One exporter lookup per flow; a junk record's leading good frames
	// were looked up before a bad one rejected it.
	lookedUp := tot.Flows
	for _, v := range junk {
		pb.ForEachFrame(v, func(f []byte) error {
			err := m.DecodeWire(f)
			if err == nil {
				lookedUp++
			}
			return err
		})
	}
	if got, want := metric(t, reg, "flowpipeline_enricher_lookups_total", "source", "exporter"), float64(lookedUp); got != want {
		t.Errorf("lookups_total{source=exporter} %v, want %v", got, want)
	}
}

// TestPipelinePartitionModulo: with fewer output than input partitions,
// input partition p goes to output partition p modulo their count, each
// input partition's flows in order, keys kept.
func TestPipelinePartitionModulo(t *testing.T) {
	c, err := kfake.NewCluster(kfake.SeedTopics(3, "flows"), kfake.SeedTopics(2, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	values, tot := flowtest.Records(9, 600, 2, time.Now().Add(-time.Hour))
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		r := &kgo.Record{Topic: "flows", Partition: int32(i % 3), Key: []byte{byte(i % 3)}, Value: v}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	cfg := DefaultConfig()
	cfg.Brokers, cfg.OutTopic, cfg.TransactionalID, cfg.TransactionInterval = brokers, "out", "mod", 100*time.Millisecond
	p, err := NewPipeline(cfg, new(Passthrough), testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	rc, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("out"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Per output partition, the values of each input key in order.
	got := map[int32]map[byte][][]byte{}
	n := 0
	for deadline := time.Now().Add(time.Minute); n < len(values) && time.Now().Before(deadline); {
		pctx, pcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		rc.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			if got[r.Partition] == nil {
				got[r.Partition] = map[byte][][]byte{}
			}
			got[r.Partition][r.Key[0]] = append(got[r.Partition][r.Key[0]], r.Value)
			n++
		})
		pcancel()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != len(values) {
		t.Fatalf("%d records out, want %d (%v)", n, len(values), tot)
	}
	for in := range 3 {
		var want [][]byte
		for i := in; i < len(values); i += 3 {
			want = append(want, values[i])
		}
		out := int32(in % 2)
		if g := got[out][byte(in)]; !slices.EqualFunc(g, want, bytes.Equal) {
			t.Errorf("input partition %d: %d records on output partition %d, want its %d records in order", in, len(g), out, len(want))
		}
	}
}
