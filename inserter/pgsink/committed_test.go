package pgsink_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestCommittedReportsStoredFlows checks that Config.Committed receives
// exactly the time_received_ns of the flows each transaction stored: not
// the records already stored (skipped by offset), not an aborted record's,
// and nothing for a transaction that stored no flow.
func TestCommittedReportsStoredFlows(t *testing.T) {
	dsn := testDB(t)
	var got [][]int64
	s, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g", Committed: func(ns []int64) {
		got = append(got, slices.Clone(ns))
	}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	ctx := context.Background()
	if err := s.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute).UnixNano()
	flows := make([]*pb.FlowMessage, 10)
	for i := range flows {
		flows[i] = &pb.FlowMessage{TimeReceivedNs: uint64(base + int64(i)), SequenceNum: uint32(i), Bytes: 1, Packets: 1}
	}
	want := func(lo, hi int) []int64 {
		var out []int64
		for i := lo; i < hi; i++ {
			out = append(out, base+int64(i))
		}
		return out
	}

	// Records 0-4 stored first.
	if _, err := s.Write(ctx, batchOf(t, flows[:5], 0)); err != nil {
		t.Fatal(err)
	}
	// A batch of records 0-9 overlaps: 0-4 are skipped, 5-9 stored.
	b := batchOf(t, flows, 0)
	res, err := s.Write(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Flows != 5 || res.SkippedRecords != 5 {
		t.Fatalf("second write stored %d flows and skipped %d records, want 5 and 5", res.Flows, res.SkippedRecords)
	}
	// The same batch again stores nothing: no call.
	if _, err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	// A record aborted after its flow was added never reaches the callback.
	ab := pgsink.NewBatch("flows", 0)
	ab.Start = 10
	ab.BeginRecord(10)
	ab.AddFlow(&pb.FlowMessage{TimeReceivedNs: uint64(base + 100), SequenceNum: 100})
	ab.AbortRecord()
	ab.BeginRecord(11)
	ab.AddFlow(&pb.FlowMessage{TimeReceivedNs: uint64(base + 11), SequenceNum: 11})
	ab.EndRecord()
	if _, err := s.Write(ctx, ab); err != nil {
		t.Fatal(err)
	}
	wantCalls := [][]int64{want(0, 5), want(5, 10), {base + 11}}
	if len(got) != len(wantCalls) {
		t.Fatalf("Committed called %d times (%v), want %d", len(got), got, len(wantCalls))
	}
	for i := range wantCalls {
		if !slices.Equal(got[i], wantCalls[i]) {
			t.Errorf("call %d: time_received_ns %v, want %v", i, got[i], wantCalls[i])
		}
	}
}
