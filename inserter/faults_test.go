package inserter

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// TestCorruptRecords mixes a few thousand corrupt records of every kind
// between good ones on the real broker: the inserter stays up, stores
// exactly the good flows, counts each corrupt record under its reason and
// copies each to the dead-letter topic.
func TestCorruptRecords(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic, dlq := testenv.UniqueName(t), testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	k.CreateTopic(t, dlq, 1)
	base := time.Now().Add(-time.Hour)
	good, want := flowtest.Records(31, 30_000, 3, base)
	bad, reasons := flowtest.Corrupt(31, 3000, good[0])
	// Interleave: one corrupt record after every 3 good ones.
	var values [][]byte
	for i, v := range good {
		values = append(values, v)
		if i < len(bad) {
			values = append(values, bad[i])
		}
	}
	flowtest.Produce(t, k.Brokers(), topic, values)

	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, DLQTopic: dlq, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 2000, FlushInterval: 200 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	deadline := time.Now().Add(time.Minute)
	for metric(t, r.reg, "flowpipeline_inserter_records_consumed_total") < int64(len(values)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v with corrupt input", err)
	default:
	}
	if !r.in.Ready() {
		t.Error("not ready after corrupt records")
	}
	r.stop(t)
	flowtest.Check(t, dsn, want)
	if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total"); got != int64(len(bad)) {
		t.Errorf("records_invalid_total %d, want %d", got, len(bad))
	}
	for reason, n := range reasons {
		if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total", "reason", reason); got != int64(n) {
			t.Errorf("records_invalid_total{reason=%q} %d, want %d", reason, got, n)
		}
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_dlq_records_total"); got != int64(len(bad)) {
		t.Errorf("dlq_records_total %d, want %d", got, len(bad))
	}
	// The dead-letter topic holds exactly the corrupt records.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), dlq)
	if err != nil {
		t.Fatal(err)
	}
	var inDLQ int64
	ends.Each(func(o kadm.ListedOffset) { inDLQ += o.Offset })
	if inDLQ != int64(len(bad)) {
		t.Errorf("dead-letter topic holds %d records, want %d", inDLQ, len(bad))
	}
}

// TestPostgresDown stops PostgreSQL for 10 s mid-stream: the inserter
// keeps running, reports not ready, retries the same batch and ends with
// every flow stored once.
func TestPostgresDown(t *testing.T) {
	k := testenv.SharedKafka(t)
	pg := testenv.StartPostgres(t)
	dsn := pg.CreateDB(t, "flows")
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	base := time.Now().Add(-time.Hour)
	first, want := flowtest.Records(51, 40_000, 1, base)
	flowtest.Produce(t, k.Brokers(), topic, first)
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 2000, FlushInterval: 100 * time.Millisecond, RetryMax: 2 * time.Second})
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	second, tot := flowtest.Records(52, 40_000, 1, base.Add(time.Minute))
	flowtest.Produce(t, k.Brokers(), topic, second)
	want.Flows += tot.Flows
	want.Bytes += tot.Bytes
	want.Packets += tot.Packets
	sawUnready := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !r.in.Ready() {
			sawUnready = true
		}
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	if !sawUnready {
		t.Error("Ready() stayed true while PostgreSQL was down")
	}
	if !r.in.Ready() {
		t.Error("not ready after PostgreSQL came back")
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_postgres_errors_total"); got == 0 {
		t.Error("postgres_errors_total is 0 after a 10 s outage")
	}
	r.stop(t)
	flowtest.Check(t, dsn, want)
}

// TestKafkaRestart stops the broker mid-stream and starts it again: the
// inserter reconnects, resumes and stores every flow once.
func TestKafkaRestart(t *testing.T) {
	k := testenv.StartKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	base := time.Now().Add(-time.Hour)
	first, want := flowtest.Records(61, 30_000, 1, base)
	flowtest.Produce(t, k.Brokers(), topic, first)
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 2000, FlushInterval: 100 * time.Millisecond, RetryMax: time.Second})
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	second, tot := flowtest.Records(62, 30_000, 1, base.Add(time.Minute))
	flowtest.Produce(t, k.Brokers(), topic, second)
	want.Flows += tot.Flows
	want.Bytes += tot.Bytes
	want.Packets += tot.Packets
	r.waitStored(t, uint64(want.Flows), 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	r.stop(t)
	flowtest.Check(t, dsn, want)
}
