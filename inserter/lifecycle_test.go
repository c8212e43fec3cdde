package inserter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

func kafkaAdmin(t *testing.T, brokers []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// deleteTopic deletes topic and waits until the broker no longer lists it.
func deleteTopic(t *testing.T, adm *kadm.Client, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := adm.DeleteTopics(ctx, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("delete topic %s: %v", topic, err)
	}
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil && errors.Is(md.Topics[topic].Err, kerr.UnknownTopicOrPartition) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("topic %s still listed a minute after its deletion", topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recreateTopic creates topic again, retrying while the broker still
// finishes the deletion, and waits until every partition answers.
func recreateTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for ; ; time.Sleep(200 * time.Millisecond) {
		resp, err := adm.CreateTopic(context.Background(), partitions, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-create topic %s: %v", topic, err)
		}
	}
	for ; ; time.Sleep(100 * time.Millisecond) {
		ends, err := adm.ListEndOffsets(context.Background(), topic)
		ok := err == nil && len(ends[topic]) == int(partitions)
		ends.Each(func(o kadm.ListedOffset) { ok = ok && o.Err == nil })
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-created topic %s not ready: %v", topic, err)
		}
	}
}

func endOffsets(t *testing.T, adm *kadm.Client, topic string) int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		sum += o.Offset
	})
	return sum
}

func add(a, b flowtest.Totals) flowtest.Totals {
	return flowtest.Totals{Flows: a.Flows + b.Flows, Bytes: a.Bytes + b.Bytes, Packets: a.Packets + b.Packets}
}

// TestStaleOffsetsTopicRecreated deletes and re-creates the topic under a
// running inserter: the offsets PostgreSQL stores are then past the new
// topic's end. Every partition is reset (logged, counted), its stored
// offset moved back, and every flow of the new topic is stored.
func TestStaleOffsetsTopicRecreated(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	const partitions = 3
	k.CreateTopic(t, topic, partitions)
	adm := kafkaAdmin(t, k.Brokers())
	base := time.Now().Add(-time.Hour)
	first, want := flowtest.Records(71, 3000, 1, base)
	flowtest.Produce(t, k.Brokers(), topic, first)
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 500, FlushInterval: 100 * time.Millisecond, RetryMax: time.Second})
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)

	deleteTopic(t, adm, topic)
	recreateTopic(t, adm, topic, partitions)
	// Fewer records than before in every partition: each stored offset
	// (about 1000) is past the new partition's end (about 100).
	second, tot := flowtest.Records(72, 300, 1, base.Add(time.Minute))
	flowtest.Produce(t, k.Brokers(), topic, second)
	want = add(want, tot)
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	time.Sleep(500 * time.Millisecond) // nothing more may arrive
	r.stop(t)
	d := flowtest.Check(t, dsn, want)
	if d.StoredOffsets != int64(len(second)) {
		t.Errorf("kafka_offsets sums to %d, want %d: the new topic's end", d.StoredOffsets, len(second))
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_offsets_reset_total", "topic", topic, "reason", ResetPastEnd); got != partitions {
		t.Errorf("offsets_reset_total{reason=past_end} = %d, want %d (one per partition)", got, partitions)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_already_stored_total"); got != 0 {
		t.Errorf("records_already_stored_total = %d, want 0: no record of the new topic may be skipped", got)
	}
}

// TestStaleOffsetsAtStart is the Kafka volume reset: the inserter is
// stopped, the topic re-created, and the inserter started again.
func TestStaleOffsetsAtStart(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	const partitions = 2
	k.CreateTopic(t, topic, partitions)
	adm := kafkaAdmin(t, k.Brokers())
	base := time.Now().Add(-time.Hour)
	first, want := flowtest.Records(73, 2000, 1, base)
	flowtest.Produce(t, k.Brokers(), topic, first)
	cfg := Config{Brokers: k.Brokers(), Topic: topic, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 500, FlushInterval: 100 * time.Millisecond, RetryMax: time.Second}
	r := start(t, cfg)
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	r.stop(t)

	deleteTopic(t, adm, topic)
	recreateTopic(t, adm, topic, partitions)
	second, tot := flowtest.Records(74, 400, 1, base.Add(time.Minute))
	flowtest.Produce(t, k.Brokers(), topic, second)
	want = add(want, tot)
	r2 := start(t, cfg)
	r2.waitStored(t, uint64(tot.Flows), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	r2.stop(t)
	d := flowtest.Check(t, dsn, want)
	if d.StoredOffsets != int64(len(second)) {
		t.Errorf("kafka_offsets sums to %d, want %d", d.StoredOffsets, len(second))
	}
	if got := metric(t, r2.reg, "flowpipeline_inserter_offsets_reset_total", "reason", ResetPastEnd); got != partitions {
		t.Errorf("offsets_reset_total = %d, want %d", got, partitions)
	}
}

// storedOffset reads the next offset PostgreSQL stores for partition 0.
func storedOffset(t *testing.T, dsn, topic string) int64 {
	t.Helper()
	var off int64
	err := pgConn(t, dsn).QueryRow(context.Background(),
		"SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets WHERE topic = $1", topic).Scan(&off)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// TestDeadLetterAtLeastOnce deletes the dead-letter topic under a running
// inserter: the batch holding a rejected record is not committed while its
// copy cannot be written, so the stored offset stops before that record;
// once the topic is back, the copies land and everything after is stored.
func TestDeadLetterAtLeastOnce(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic, dlq := testenv.UniqueName(t), testenv.UniqueName(t)+"-dlq"
	k.CreateTopic(t, topic, 1)
	k.CreateTopic(t, dlq, 1)
	adm := kafkaAdmin(t, k.Brokers())
	base := time.Now().Add(-time.Hour)
	good1, want := flowtest.Records(81, 2000, 1, base)
	bad1, _ := flowtest.Corrupt(81, 100, good1[0])
	phase1 := interleave(good1, bad1, 20)
	flowtest.Produce(t, k.Brokers(), topic, phase1)
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, DLQTopic: dlq, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 500, FlushInterval: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	waitMetric(t, r, "flowpipeline_inserter_dlq_records_total", int64(len(bad1)))
	if got := storedOffset(t, dsn, topic); got != int64(len(phase1)) {
		t.Fatalf("stored offset %d after phase 1, want %d", got, len(phase1))
	}

	// The dead-letter topic goes away; phase 2 starts with a rejected record.
	deleteTopic(t, adm, dlq)
	good2, tot := flowtest.Records(82, 2000, 1, base.Add(time.Minute))
	bad2, _ := flowtest.Corrupt(82, 50, good2[0])
	phase2 := append([][]byte{bad2[0]}, interleave(good2, bad2[1:], 40)...)
	flowtest.Produce(t, k.Brokers(), topic, phase2)
	want = add(want, tot)
	deadline := time.Now().Add(time.Minute)
	for metric(t, r.reg, "flowpipeline_inserter_dlq_errors_total") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no dead-letter send failed within a minute of deleting the dead-letter topic")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := storedOffset(t, dsn, topic); got != int64(len(phase1)) {
		t.Fatalf("stored offset %d while the dead-letter topic is missing; want %d, before the first rejected record of phase 2", got, len(phase1))
	}
	if got := r.in.Stored(); got != uint64(len(good1)) {
		t.Fatalf("stored %d flows while the dead-letter topic is missing, want %d", got, len(good1))
	}

	recreateTopic(t, adm, dlq, 1)
	r.waitStored(t, uint64(want.Flows), 2*time.Minute)
	waitMetric(t, r, "flowpipeline_inserter_dlq_records_total", int64(len(bad1)+len(bad2)))
	time.Sleep(500 * time.Millisecond)
	r.stop(t)
	flowtest.Check(t, dsn, want)
	if got := storedOffset(t, dsn, topic); got != int64(len(phase1)+len(phase2)) {
		t.Errorf("stored offset %d, want %d", got, len(phase1)+len(phase2))
	}
	// The re-created topic holds exactly phase 2's rejected records.
	if got := endOffsets(t, adm, dlq); got != int64(len(bad2)) {
		t.Errorf("dead-letter topic holds %d records, want %d", got, len(bad2))
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total"); got != int64(len(bad1)+len(bad2)) {
		t.Errorf("records_invalid_total %d, want %d", got, len(bad1)+len(bad2))
	}
}

// interleave puts one of bad after every every-th of good.
func interleave(good, bad [][]byte, every int) [][]byte {
	var out [][]byte
	for i, v := range good {
		out = append(out, v)
		if (i+1)%every == 0 && len(bad) > 0 {
			out = append(out, bad[0])
			bad = bad[1:]
		}
	}
	return append(out, bad...)
}

func waitMetric(t *testing.T, r *running, name string, want int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := metric(t, r.reg, name)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMissingDeadLetterTopic: Run fails at start, naming the topic.
func TestMissingDeadLetterTopic(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 1)
	in, err := New(Config{Brokers: k.Brokers(), Topic: topic, DLQTopic: "no-such-dlq", Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version()},
		testLogger(t), newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = in.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), `dead-letter topic "no-such-dlq"`) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Run = %v, want the missing dead-letter topic named", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run waited until the deadline instead of failing at start")
	}
	// Asking did not create it.
	if md, err := kafkaAdmin(t, k.Brokers()).Metadata(context.Background(), "no-such-dlq"); err != nil || !errors.Is(md.Topics["no-such-dlq"].Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("the missing dead-letter topic exists after the check (%v)", err)
	}
}

// TestReadyWhilePostgresStopsIdle stops PostgreSQL while nothing is being
// written: /readyz turns false within 5 s, and true again after restart.
func TestReadyWhilePostgresStopsIdle(t *testing.T) {
	brokers := testenv.FakeKafka(t, 1, "flows")
	pg := testenv.StartPostgres(t)
	dsn := pg.CreateDB(t, "flows")
	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn})
	waitReady(t, r, true, 30*time.Second)
	stopping := time.Now()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(stopping)
	// Within 5 s of the stop being asked for, its own duration included.
	took := stopped + waitReady(t, r, false, 5*time.Second-stopped)
	t.Logf("not ready %s after PostgreSQL began stopping (the stop took %s)", took.Round(time.Millisecond), stopped.Round(time.Millisecond))
	if got := metric(t, r.reg, "flowpipeline_inserter_ready"); got != 0 {
		t.Errorf("flowpipeline_inserter_ready = %d while PostgreSQL is down, want 0", got)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	took = waitReady(t, r, true, 10*time.Second)
	t.Logf("ready %s after PostgreSQL restarted", took.Round(time.Millisecond))
	if got := metric(t, r.reg, "flowpipeline_inserter_ready"); got != 1 {
		t.Errorf("flowpipeline_inserter_ready = %d after restart, want 1", got)
	}
}

func waitReady(t *testing.T, r *running, want bool, timeout time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	for r.in.Ready() != want {
		if time.Since(begin) > timeout {
			t.Fatalf("Ready() still %v after %s", !want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(begin)
}

// TestDeadLetterTooLarge: a rejected record larger than the dead-letter
// topic accepts is copied truncated, with its original size in a header,
// instead of stalling the partition forever.
func TestDeadLetterTooLarge(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic, dlq := testenv.UniqueName(t), testenv.UniqueName(t)+"-dlq"
	k.CreateTopic(t, topic, 1)
	adm := kafkaAdmin(t, k.Brokers())
	limit := "3000"
	if resp, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &limit}, dlq); err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", dlq, err, resp.Err)
	}
	good, want := flowtest.Records(85, 100, 1, time.Now().Add(-time.Hour))
	big := make([]byte, 20_000) // all zero: 0-length frames, rejected
	flowtest.Produce(t, k.Brokers(), topic, append(good, big))
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, DLQTopic: dlq, Group: "g", PostgresDSN: dsn, KafkaVersion: k.Version(),
		FlushCount: 500, FlushInterval: 100 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), time.Minute)
	waitMetric(t, r, "flowpipeline_inserter_dlq_records_total", 1)
	deadline := time.Now().Add(30 * time.Second)
	for storedOffset(t, dsn, topic) != int64(len(good)+1) {
		if time.Now().After(deadline) {
			t.Fatalf("stored offset %d, want %d", storedOffset(t, dsn, topic), len(good)+1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop(t)
	flowtest.Check(t, dsn, want)

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fetches := cl.PollRecords(ctx, 10)
	if err := fetches.Err(); err != nil {
		t.Fatal(err)
	}
	recs := fetches.Records()
	if len(recs) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(recs))
	}
	headers := map[string]string{}
	for _, h := range recs[0].Headers {
		headers[h.Key] = string(h.Value)
	}
	if headers["truncated"] != "20000" || headers["source_offset"] != "100" || len(recs[0].Value) == 0 || len(recs[0].Value) >= 3000 {
		t.Errorf("dead letter: %d bytes, headers %v; want a truncated copy with truncated=20000 and source_offset=100", len(recs[0].Value), headers)
	}
}
