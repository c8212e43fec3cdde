package pgsink_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newSink(t *testing.T, dsn, group string) *pgsink.Sink {
	t.Helper()
	s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: group}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func testDB(t *testing.T) string {
	t.Helper()
	pg := testenv.SharedPostgres(t)
	return pg.CreateDB(t, testenv.UniqueName(t))
}

// batchOf frames flows into a batch, one record per flow from offset first.
func batchOf(t testing.TB, flows []*pb.FlowMessage, first int64) *pgsink.Batch {
	b := pgsink.NewBatch("flows", 0)
	b.Start = first
	lim := pgsink.NewLimits(time.Now(), 0, 10*time.Minute)
	for i, m := range flows {
		if err := pgsink.ValidateFlow(m, lim); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		b.BeginRecord(first + int64(i))
		b.AddFlow(m)
		b.EndRecord()
	}
	return b
}

func TestSchemaIdempotentAndConcurrent(t *testing.T) {
	dsn := testDB(t)
	ctx := context.Background()
	const n = 8
	sinks := make([]*pgsink.Sink, n)
	for i := range sinks {
		s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g"}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		sinks[i] = s
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i, s := range sinks {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateSchema(ctx)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent schema creation: %v", err)
	}
	// Again, on an existing schema.
	if err := sinks[0].CreateSchema(ctx); err != nil {
		t.Fatalf("second schema creation: %v", err)
	}
	// Concurrent writers creating the same day's partition at once.
	now := time.Now()
	for i, s := range sinks {
		wg.Go(func() {
			m := &pb.FlowMessage{TimeReceivedNs: uint64(now.UnixNano()), Bytes: 100, Packets: 1, SequenceNum: uint32(i)}
			b := batchOf(t, []*pb.FlowMessage{m}, 0)
			b.Partition = int32(i)
			_, errs[i] = s.Write(ctx, b)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent first writes: %v", err)
	}
	flowtest.Check(t, dsn, flowtest.Totals{Flows: n, Bytes: 100 * n, Packets: n})
}

func TestAddresses(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	now := uint64(time.Now().UnixNano())
	v6 := []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	flows := []*pb.FlowMessage{
		{TimeReceivedNs: now, SequenceNum: 1, SrcAddr: []byte{192, 0, 2, 1}, DstAddr: []byte{192, 168, 1, 1}, SamplerAddress: []byte{10, 0, 0, 1}},
		{TimeReceivedNs: now, SequenceNum: 2, SrcAddr: v6, DstAddr: []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1}},
		{TimeReceivedNs: now, SequenceNum: 3},
	}
	if _, err := s.Write(context.Background(), batchOf(t, flows, 0)); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	want := []struct{ src, dst, sampler string }{
		{"192.0.2.1 4", "192.168.1.1 4", "10.0.0.1"},
		// A 16-byte IPv4-mapped address was sent as IPv6: it stays IPv6.
		{"2001:db8::1 6", "::ffff:192.0.2.1 6", "NULL"},
		{"NULL", "NULL", "NULL"},
	}
	rows, err := conn.Query(context.Background(), `SELECT coalesce(host(src_addr) || ' ' || family(src_addr), 'NULL'),
  coalesce(host(dst_addr) || ' ' || family(dst_addr), 'NULL'), coalesce(host(sampler_address), 'NULL'), time_flow_start IS NULL
FROM flows ORDER BY sequence_num`)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for rows.Next() {
		var src, dst, sampler string
		var nullStart bool
		if err := rows.Scan(&src, &dst, &sampler, &nullStart); err != nil {
			t.Fatal(err)
		}
		if src != want[i].src || dst != want[i].dst || sampler != want[i].sampler {
			t.Errorf("row %d: src %q dst %q sampler %q; want %q %q %q", i, src, dst, sampler, want[i].src, want[i].dst, want[i].sampler)
		}
		if !nullStart {
			t.Errorf("row %d: time_flow_start 0 should be NULL", i)
		}
		i++
	}
	if rows.Err() != nil || i != 3 {
		t.Fatalf("read %d rows: %v", i, rows.Err())
	}
	// Exact time round trip, to the microsecond.
	var got time.Time
	if err := conn.QueryRow(context.Background(), "SELECT time_received FROM flows LIMIT 1").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(0, int64(now)).Truncate(time.Microsecond); !got.Equal(want) {
		t.Errorf("time_received %v, want %v", got, want)
	}
}

func TestRollupMatchesAfterManyBatches(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	g := flowtest.NewGen(7)
	base := time.Now().Add(-3 * time.Hour)
	var want flowtest.Totals
	offset := int64(0)
	for batch := range 30 {
		var flows []*pb.FlowMessage
		for i := range 1000 + batch*37 {
			m := &pb.FlowMessage{}
			g.Next(m, base.Add(time.Duration(batch)*5*time.Minute+time.Duration(i)*time.Millisecond))
			flows = append(flows, m)
			want.Flows++
			want.Bytes += int64(m.Bytes)
			want.Packets += int64(m.Packets)
		}
		b := batchOf(t, flows, offset)
		res, err := s.Write(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		if res.Flows != len(flows) || res.SkippedRecords != 0 {
			t.Fatalf("batch %d: stored %+v, want %d flows", batch, res, len(flows))
		}
		offset = b.End
	}
	d := flowtest.Check(t, dsn, want)
	if d.StoredOffsets != offset {
		t.Errorf("stored next offset %d, want %d", d.StoredOffsets, offset)
	}
}

func TestWriteTwiceStoresOnce(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	g := flowtest.NewGen(3)
	var flows []*pb.FlowMessage
	var want flowtest.Totals
	for i := range 100 {
		m := &pb.FlowMessage{}
		g.Next(m, time.Now().Add(time.Duration(i)*time.Millisecond-time.Minute))
		flows = append(flows, m)
	}
	ctx := context.Background()
	// Inserter A stores offsets 0..59; inserter B, which re-read from 0
	// during a rebalance, then writes 0..99: only 60..99 may land.
	a := batchOf(t, flows[:60], 0)
	b := batchOf(t, flows, 0)
	if res, err := s.Write(ctx, a); err != nil || res.Flows != 60 {
		t.Fatalf("first write: %+v %v", res, err)
	}
	res, err := s.Write(ctx, b)
	if err != nil || res.Flows != 40 || res.SkippedRecords != 60 {
		t.Fatalf("overlapping write: %+v %v, want 40 flows and 60 skipped records", res, err)
	}
	if res, err := s.Write(ctx, b); err != nil || res.Flows != 0 || res.SkippedRecords != 100 {
		t.Fatalf("repeated write: %+v %v, want nothing stored", res, err)
	}
	for _, m := range flows {
		want.Flows++
		want.Bytes += int64(m.Bytes)
		want.Packets += int64(m.Packets)
	}
	flowtest.Check(t, dsn, want)

	// A batch that starts after the stored offset would lose records.
	gap := batchOf(t, flows[:1], 150)
	if _, err := s.Write(ctx, gap); !errors.Is(err, pgsink.ErrGap) {
		t.Fatalf("gap write: %v, want ErrGap", err)
	}
	stored, err := s.StoredOffsets(ctx, "flows")
	if err != nil || len(stored) != 1 || stored[0] != 100 {
		t.Fatalf("stored offsets %v %v, want partition 0 at 100", stored, err)
	}
}

func TestRetentionDropsWholePartitions(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	var flows []*pb.FlowMessage
	for d := range 10 {
		ts := today.AddDate(0, 0, -d).Add(time.Hour)
		flows = append(flows, &pb.FlowMessage{TimeReceivedNs: uint64(ts.UnixNano()), Bytes: uint64(1000 + d), Packets: 1, SequenceNum: uint32(d)})
	}
	if _, err := s.Write(ctx, batchOf(t, flows, 0)); err != nil {
		t.Fatal(err)
	}
	// Keep 7 days: today and the 6 before are kept whole, days 7, 8, 9 ago go.
	dropped, err := s.DropExpired(ctx, today.AddDate(0, 0, -6))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"flows_p" + today.AddDate(0, 0, -9).Format("20060102"), "flows_p" + today.AddDate(0, 0, -8).Format("20060102"), "flows_p" + today.AddDate(0, 0, -7).Format("20060102")}
	if len(dropped) != 3 || dropped[0] != want[0] || dropped[1] != want[1] || dropped[2] != want[2] {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	var keptBytes int64
	for d := range 7 {
		keptBytes += int64(1000 + d)
	}
	flowtest.Check(t, dsn, flowtest.Totals{Flows: 7, Bytes: keptBytes, Packets: 7})
	// The sink forgot the dropped partitions: an old flow arriving late
	// recreates its partition instead of failing forever.
	late := batchOf(t, flows[9:], 10)
	if _, err := s.Write(ctx, late); err != nil {
		t.Fatalf("late flow after retention: %v", err)
	}
}

// TestSetStartOffsets: a group told to start at offset 40 stores only the
// records from 40 on, and a start offset never moves a stored one.
func TestSetStartOffsets(t *testing.T) {
	dsn := testDB(t)
	s := newSink(t, dsn, "g")
	ctx := context.Background()
	if err := s.SetStartOffsets(ctx, "flows", map[int32]int64{0: 40, 1: 7}); err != nil {
		t.Fatal(err)
	}
	g := flowtest.NewGen(5)
	var flows []*pb.FlowMessage
	var want flowtest.Totals
	for i := range 60 {
		m := &pb.FlowMessage{}
		g.Next(m, time.Now().Add(time.Duration(i)*time.Millisecond-time.Minute))
		flows = append(flows, m)
		if i >= 40 {
			want.Flows++
			want.Bytes += int64(m.Bytes)
			want.Packets += int64(m.Packets)
		}
	}
	res, err := s.Write(ctx, batchOf(t, flows, 0))
	if err != nil || res.Flows != 20 || res.SkippedRecords != 40 {
		t.Fatalf("write from offset 0: %+v %v, want 20 flows and 40 skipped records", res, err)
	}
	flowtest.Check(t, dsn, want)

	if err := s.SetStartOffsets(ctx, "flows", map[int32]int64{0: 0}); err != nil {
		t.Fatal(err)
	}
	stored, err := s.StoredOffsets(ctx, "flows")
	if err != nil || len(stored) != 2 || stored[0] != 60 || stored[1] != 7 {
		t.Fatalf("stored offsets %v %v, want partition 0 at 60 and 1 at 7", stored, err)
	}
}
