package inserter

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type running struct {
	in     *Inserter
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.RetryMax == 0 {
		cfg.RetryMax = time.Second
	}
	in, err := New(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{in: in, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v, want nil after cancel", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("Run did not return within 60s of cancel")
	}
}

// waitStored waits until the inserter committed want flows, failing if
// Run returns first or it takes longer than timeout.
func (r *running) waitStored(t *testing.T, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for r.in.Stored() < want {
		select {
		case err := <-r.done:
			t.Fatalf("Run returned %v before storing %d flows (stored %d)", err, want, r.in.Stored())
		case <-deadline:
			t.Fatalf("stored %d flows after %s, want %d", r.in.Stored(), timeout, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := r.in.Stored(); got != want {
		t.Fatalf("stored %d flows, want exactly %d", got, want)
	}
}

// metric sums every series of the named metric (label values in labels
// must match) in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) int64 {
	t.Helper()
	return int64(flowtest.Metric(t, reg, name, labels...))
}

func TestEndToEndFakeKafka(t *testing.T) {
	brokers := testenv.FakeKafka(t, 3, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	base := time.Now().Add(-2 * time.Hour)
	single, tot1 := flowtest.Records(1, 30000, 1, base)
	multi, tot2 := flowtest.Records(2, 20000, 10, base.Add(time.Minute))
	flowtest.Produce(t, brokers, "flows", append(single, multi...))
	want := flowtest.Totals{Flows: tot1.Flows + tot2.Flows, Bytes: tot1.Bytes + tot2.Bytes, Packets: tot1.Packets + tot2.Packets}

	cfg := Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 5000, FlushInterval: 200 * time.Millisecond}
	r := start(t, cfg)
	r.waitStored(t, uint64(want.Flows), time.Minute)
	if !r.in.Ready() {
		t.Error("not ready after storing everything")
	}
	r.stop(t)
	d := flowtest.Check(t, dsn, want)
	if records := int64(len(single) + len(multi)); d.StoredOffsets != records {
		t.Errorf("kafka_offsets sums to %d, want %d records", d.StoredOffsets, records)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_flows_stored_total"); got != want.Flows {
		t.Errorf("flows_stored_total %d, want %d", got, want.Flows)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total"); got != 0 {
		t.Errorf("records_invalid_total %d, want 0", got)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_consumed_total"); got != int64(len(single)+len(multi)) {
		t.Errorf("records_consumed_total %d, want %d", got, len(single)+len(multi))
	}
	var zeros int64
	if err := pgConn(t, dsn).QueryRow(context.Background(), "SELECT count(*) FROM flows WHERE sampling_rate = 0").Scan(&zeros); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_flows_zero_sampling_rate_total"); zeros == 0 || got != zeros {
		t.Errorf("flows_zero_sampling_rate_total %d, want %d (rows with sampling_rate 0)", got, zeros)
	}

	// A second run of the same group resumes from PostgreSQL's offsets:
	// only the new flows are stored.
	more, tot3 := flowtest.Records(3, 3000, 1, base.Add(2*time.Minute))
	flowtest.Produce(t, brokers, "flows", more)
	r2 := start(t, cfg)
	r2.waitStored(t, uint64(tot3.Flows), time.Minute)
	r2.stop(t)
	want.Flows += tot3.Flows
	want.Bytes += tot3.Bytes
	want.Packets += tot3.Packets
	flowtest.Check(t, dsn, want)
}

// TestStoredOffsetWins checks that Setup starts each partition at the
// offset stored in PostgreSQL, whether Kafka's committed offset for the
// group is ahead of it or behind it.
func TestStoredOffsetWins(t *testing.T) {
	brokers := testenv.FakeKafka(t, 2, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	values, _ := flowtest.Records(5, 2000, 1, time.Now().Add(-time.Hour))
	// Partition 0 gets values[:1000], partition 1 values[1000:].
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for i, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "flows", Partition: int32(i / 1000), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// PostgreSQL says: partition 0 stored up to 300, partition 1 up to 700.
	// Kafka's group commit says 800 for partition 0 (ahead) and 100 for
	// partition 1 (behind). The inserter must store 700 + 300 flows.
	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 100, FlushInterval: 100 * time.Millisecond, Topic: "none"})
	// Only to create the schema: wait for readiness, then stop.
	deadline := time.Now().Add(30 * time.Second)
	for !r.in.schemaReady.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.stop(t)
	conn := pgConn(t, dsn)
	if _, err := conn.Exec(ctx, "INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset) VALUES ('g', 'flows', 0, 300), ('g', 'flows', 1, 700)"); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	var offs kadm.Offsets
	offs.AddOffset("flows", 0, 800, -1)
	offs.AddOffset("flows", 1, 100, -1)
	if resp, err := adm.CommitOffsets(ctx, "g", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit Kafka offsets: %v %v", err, resp.Error())
	}
	r2 := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 100, FlushInterval: 100 * time.Millisecond})
	r2.waitStored(t, 1000, time.Minute)
	time.Sleep(500 * time.Millisecond) // nothing more may arrive
	r2.stop(t)
	if got := r2.in.Stored(); got != 1000 {
		t.Fatalf("stored %d flows, want 1000", got)
	}
	var n0, n1 int64
	if err := conn.QueryRow(ctx, "SELECT (SELECT next_offset FROM kafka_offsets WHERE partition = 0), (SELECT next_offset FROM kafka_offsets WHERE partition = 1)").Scan(&n0, &n1); err != nil {
		t.Fatal(err)
	}
	if n0 != 1000 || n1 != 1000 {
		t.Fatalf("stored next offsets %d, %d; want 1000, 1000", n0, n1)
	}
}
