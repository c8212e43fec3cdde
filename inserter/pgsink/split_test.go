package pgsink

import (
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestSplitByDays: runs cover the records in order, on record boundaries,
// with at most maxDaysPerWrite days each, and are as long as allowed.
func TestSplitByDays(t *testing.T) {
	b := NewBatch("flows", 0)
	day0 := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	// 200 records, each with flows on 1 or 2 days; days advance by one
	// every record, so each record brings one new day.
	for i := range 200 {
		b.BeginRecord(int64(i))
		b.AddFlow(&pb.FlowMessage{TimeReceivedNs: uint64(day0.AddDate(0, 0, i).UnixNano())})
		if i%2 == 0 {
			b.AddFlow(&pb.FlowMessage{TimeReceivedNs: uint64(day0.AddDate(0, 0, i+1).UnixNano())})
		}
		b.EndRecord()
	}
	runs := b.splitByDays(0, b.Records(), maxDaysPerWrite)
	want := [][2]int{{0, 64}, {64, 128}, {128, 192}, {192, 200}}
	if len(runs) != len(want) {
		t.Fatalf("runs %v, want %v", runs, want)
	}
	for i := range runs {
		if runs[i] != want[i] {
			t.Fatalf("runs %v, want %v", runs, want)
		}
		if n := len(b.daysIn(runs[i][0], runs[i][1])); n > maxDaysPerWrite {
			t.Errorf("run %v touches %d days", runs[i], n)
		}
	}
	// A sub-range, and a batch within the limit, are one run.
	if got := b.splitByDays(10, 20, maxDaysPerWrite); len(got) != 1 || got[0] != [2]int{10, 20} {
		t.Errorf("sub-range runs %v", got)
	}
}
