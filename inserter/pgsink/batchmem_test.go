package pgsink

import (
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestBatchDimsInterned: a batch keeps each distinct set of enriched
// dimensions once, every flow's rollup points at its own set (also across
// an aborted record), and Reset forgets them.
func TestBatchDimsInterned(t *testing.T) {
	b := NewBatch("flows", 0)
	now := uint64(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	names := []string{"", "GOOGLE", "NETFLIX-ASN", "GOOGLE", "", "東京 Net", "NETFLIX-ASN", "NETFLIX-ASN"}
	flow := func(i int) *pb.FlowMessage {
		// String copies, as DecodeWire makes: equal values, distinct memory.
		return &pb.FlowMessage{TimeReceivedNs: now, SrcAsName: string([]byte(names[i%len(names)])), InIfBoundary: pb.FlowMessage_Boundary(i % 2)}
	}
	for i := range 40 {
		b.BeginRecord(int64(i))
		b.AddFlow(flow(i))
		if i == 7 {
			b.AddFlow(&pb.FlowMessage{TimeReceivedNs: now, DstAsName: "aborted"})
			b.AbortRecord()
			continue
		}
		b.EndRecord()
	}
	// Distinct (name, boundary) pairs: ("", 0), (GOOGLE, 1), (NETFLIX-ASN,
	// 0), (東京 Net, 1), (NETFLIX-ASN, 1); plus the aborted record's set,
	// which no rollup uses.
	if got, want := len(b.dims), 6; got != want {
		t.Errorf("%d distinct dimension sets kept, want %d", got, want)
	}
	if got, want := len(b.rollups), 39; got != want {
		t.Fatalf("%d rollups, want %d", got, want)
	}
	j := 0
	for i := range 40 {
		if i == 7 {
			continue
		}
		d := b.dims[b.rollups[j].dims]
		if want := flow(i); d.srcASName != want.SrcAsName || d.inIfBoundary != int16(want.InIfBoundary) {
			t.Errorf("flow %d: rollup dimensions %q/%d, want %q/%d", i, d.srcASName, d.inIfBoundary, want.SrcAsName, want.InIfBoundary)
		}
		j++
	}
	b.Reset("flows", 1)
	if len(b.dims) != 0 || len(b.dimIndex) != 0 {
		t.Fatalf("after Reset: %d dimension sets, %d indexed, want 0", len(b.dims), len(b.dimIndex))
	}
	b.BeginRecord(0)
	b.AddFlow(flow(1))
	b.EndRecord()
	if d := b.dims[b.rollups[0].dims]; len(b.dims) != 1 || d.srcASName != "GOOGLE" {
		t.Fatalf("after Reset and one flow: %d sets, first %q; want 1, GOOGLE", len(b.dims), d.srcASName)
	}
}

// TestBatchGrowFitsPlainRows: a batch grown for n flows holds n plain
// flows of the largest kind (IPv6, every time set) without reallocating,
// and wastes no more than that row size allows.
func TestBatchGrowFitsPlainRows(t *testing.T) {
	const n = 1000
	b := NewBatch("flows", 0)
	b.Grow(n)
	c := cap(b.rows)
	a := make([]byte, 16)
	for i := range n {
		b.BeginRecord(int64(i))
		b.AddFlow(&pb.FlowMessage{TimeReceivedNs: 1e18, TimeFlowStartNs: 1e18, TimeFlowEndNs: 1e18, SamplerAddress: a, SrcAddr: a, DstAddr: a,
			SrcAs: 1 << 31, Bytes: 1 << 40, SamplingRate: 1 << 31})
		b.EndRecord()
	}
	if cap(b.rows) != c {
		t.Errorf("rows reallocated from %d to %d bytes for %d flows", c, cap(b.rows), n)
	}
	if got, want := b.Bytes(), n*plainRowBytes; got != want {
		t.Errorf("%d flows encode to %d bytes, want %d (plainRowBytes %d each)", n, got, want, plainRowBytes)
	}
	if c > n*plainRowBytes+8192 {
		t.Errorf("Grow(%d) reserved %d bytes, want about %d", n, c, n*plainRowBytes)
	}
}
