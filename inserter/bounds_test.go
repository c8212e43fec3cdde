package inserter

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// encode frames each message as its own record value and adds it to tot.
func encode(t *testing.T, msgs []*pb.FlowMessage, tot *flowtest.Totals) [][]byte {
	t.Helper()
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = frame(t, m)
		if tot != nil {
			tot.Flows++
			tot.Bytes += int64(m.Bytes)
			tot.Packets += int64(m.Packets)
		}
	}
	return out
}

// dlqCount is the number of records in topic.
func dlqCount(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestTimeBounds: with a clock (Config.Now) and a 7-day retention, flows
// older than the retention or more than MaxFuture ahead are rejected and
// counted by reason; the others, at the bounds included, are stored.
func TestTimeBounds(t *testing.T) {
	brokers := testenv.FakeKafka(t, 1, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	now := time.Now().UTC().Truncate(time.Second)
	week := 7 * 24 * time.Hour
	g := flowtest.NewGen(11)
	var msgs []*pb.FlowMessage
	var want flowtest.Totals
	add := func(n int, at func(i int) time.Time) []*pb.FlowMessage {
		var out []*pb.FlowMessage
		for i := range n {
			m := &pb.FlowMessage{}
			g.Next(m, at(i))
			out = append(out, m)
		}
		msgs = append(msgs, out...)
		return out
	}
	good := add(500, func(i int) time.Time { return now.Add(-time.Duration(i) * time.Minute) })
	good = append(good, add(1, func(int) time.Time { return now.Add(-week).Add(time.Second) })...)
	good = append(good, add(1, func(int) time.Time { return now.Add(10 * time.Minute) })...)
	add(30, func(i int) time.Time { return now.Add(-week - time.Second - time.Duration(i)*time.Hour) })          // too old
	add(20, func(i int) time.Time { return now.Add(10*time.Minute + time.Second + time.Duration(i)*time.Hour) }) // too new
	add(5, func(i int) time.Time { return time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC) })                       // too old
	encode(t, good, &want)
	flowtest.Produce(t, brokers, "flows", encode(t, msgs, nil))

	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, FlushCount: 10000, FlushInterval: 100 * time.Millisecond,
		Retention: week, Now: func() time.Time { return now }})
	r.waitStored(t, uint64(want.Flows), time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for metric(t, r.reg, "flowpipeline_inserter_records_consumed_total") < int64(len(msgs)) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.stop(t)
	flowtest.Check(t, dsn, want)
	for reason, n := range map[string]int64{ReasonTooOld: 35, ReasonTooNew: 20, ReasonOutOfRange: 0, ReasonInvalidField: 0} {
		if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total", "reason", reason); got != n {
			t.Errorf("records_invalid_total{reason=%q} %d, want %d", reason, got, n)
		}
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_consumed_total"); got != int64(len(msgs)) {
		t.Errorf("records_consumed_total %d, want %d", got, len(msgs))
	}
}

// TestWriterSurvivesContentErrors: PostgreSQL refuses some records that
// validation let through (a CHECK constraint added for the test; a real
// SQLSTATE 23514). The writer rejects exactly those records, counts them
// under write_rejected and copies them to the dead-letter topic, stores
// every other flow once, and the partition goes on with later records.
func TestWriterSurvivesContentErrors(t *testing.T) {
	brokers := testenv.FakeKafka(t, 1, "flows", "dlq")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	ctx := context.Background()
	s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "setup"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := pgConn(t, dsn).Exec(ctx, "ALTER TABLE flows ADD CONSTRAINT test_refuses_666 CHECK (bytes <> 666)"); err != nil {
		t.Fatal(err)
	}

	g := flowtest.NewGen(13)
	base := time.Now().Add(-time.Hour)
	batch := func(n int, bad map[int]bool, from int) ([][]byte, flowtest.Totals) {
		var msgs, good []*pb.FlowMessage
		for i := range n {
			m := &pb.FlowMessage{}
			g.Next(m, base.Add(time.Duration(from+i)*time.Millisecond))
			if bad[i] {
				m.Bytes = 666
			} else if m.Bytes == 666 {
				m.Bytes = 667
			}
			if !bad[i] {
				good = append(good, m)
			}
			msgs = append(msgs, m)
		}
		var tot flowtest.Totals
		encode(t, good, &tot)
		return encode(t, msgs, nil), tot
	}
	// First, last, adjacent and lone bad records in one batch of 1,000.
	bad := map[int]bool{0: true, 7: true, 500: true, 501: true, 502: true, 998: true, 999: true}
	values, want := batch(1000, bad, 0)
	flowtest.Produce(t, brokers, "flows", values)
	r := start(t, Config{Brokers: brokers, Group: "g", PostgresDSN: dsn, DLQTopic: "dlq", FlushCount: 10000, FlushInterval: 200 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), time.Minute)

	// The partition continues: later records, one of them bad too.
	more, tot2 := batch(300, map[int]bool{150: true}, 1000)
	flowtest.Produce(t, brokers, "flows", more)
	want.Flows += tot2.Flows
	want.Bytes += tot2.Bytes
	want.Packets += tot2.Packets
	r.waitStored(t, uint64(want.Flows), time.Minute)
	r.stop(t)

	d := flowtest.Check(t, dsn, want)
	if want.Flows != 1300-8 || d.StoredOffsets != 1300 {
		t.Errorf("stored %d flows and next offset %d; want %d and 1300", want.Flows, d.StoredOffsets, 1300-8)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total", "reason", ReasonWriteRejected); got != 8 {
		t.Errorf("records_invalid_total{reason=write_rejected} %d, want 8", got)
	}
	if got := metric(t, r.reg, "flowpipeline_inserter_records_invalid_total"); got != 8 {
		t.Errorf("records_invalid_total %d, want 8", got)
	}
	if got := dlqCount(t, brokers, "dlq"); got != 8 {
		t.Errorf("dead-letter topic holds %d records, want 8", got)
	}
	var n666 int64
	if err := pgConn(t, dsn).QueryRow(ctx, "SELECT count(*) FROM flows WHERE bytes = 666").Scan(&n666); err != nil || n666 != 0 {
		t.Errorf("%d refused flows stored (%v)", n666, err)
	}
}
