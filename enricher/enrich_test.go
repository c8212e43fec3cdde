package enricher

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/geotest"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func loadSet(t testing.TB) (*sources.Loader, *sources.Set) {
	t.Helper()
	l, err := sources.NewLoader(geotest.Write(t, t.TempDir()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l, l.Current()
}

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func TestEnrich(t *testing.T) {
	_, set := loadSet(t)
	ext, in := pb.FlowMessage_BOUNDARY_EXTERNAL, pb.FlowMessage_BOUNDARY_INTERNAL
	tests := []struct {
		name string
		m    *pb.FlowMessage
		o    Options
		want pb.Enrichment
	}{
		{"known exporter, interfaces listed and defaulted, AS 0 filled, rate 0 filled",
			&pb.FlowMessage{SrcAddr: ip("192.0.2.7"), DstAddr: ip("10.4.1.1"), SamplerAddress: ip("192.0.2.250"), InIf: 1, OutIf: 2},
			Options{},
			pb.Enrichment{SrcCountry: "FR", DstCountry: "US", SrcAs: 64496, SrcAsName: "Doc Net A", DstAs: 65001, DstAsName: "Private Low",
				SrcNetName: "doc-a", SrcNetRole: "customer", SrcNetSite: "par1", DstNetName: "lab", DstNetRole: "lab", DstNetSite: "ams1",
				ExporterName: "edge1.par1", SamplingRate: 2000, SamplingRateFromExporter: true,
				InIfName: "et-0/0/1", InIfDescription: "Transit: Cogent", InIfSpeed: 100000000000, InIfBoundary: ext,
				OutIfName: "et-0/0/2", OutIfDescription: "Core", OutIfSpeed: 400000000000, OutIfBoundary: in}},
		{"exporter's AS kept: named when the data agrees, not when it contradicts",
			&pb.FlowMessage{SrcAddr: ip("198.51.100.9"), DstAddr: ip("10.5.0.1"), SrcAs: 64497, DstAs: 65005, SamplerAddress: ip("192.0.2.251"), SamplingRate: 100, InIf: 9, OutIf: 2},
			Options{},
			pb.Enrichment{SrcCountry: "DE", DstCountry: "US", SrcAsName: "Doc Net B, Inc.", DstNetName: "private", DstNetRole: "internal", DstNetSite: "fra1",
				ExporterName: "edge2.lon1", InIfBoundary: ext,
				OutIfName: "xe-1/0/2", OutIfDescription: "Customer: B", OutIfBoundary: in}},
		{"override: the data's AS wins",
			&pb.FlowMessage{SrcAddr: ip("198.51.100.9"), DstAddr: ip("10.5.0.1"), SrcAs: 1, DstAs: 65005, SamplerAddress: ip("192.0.2.252")},
			Options{ASNOverride: true},
			pb.Enrichment{SrcCountry: "DE", DstCountry: "US", SrcAs: 64497, SrcAsName: "Doc Net B, Inc.", DstAs: 65001, DstAsName: "Private Low",
				DstNetName: "private", DstNetRole: "internal", DstNetSite: "fra1", ExporterName: "core1.fra1", SamplingRate: 512, SamplingRateFromExporter: true}},
		{"IPv6, mapped IPv4 sampler, misses",
			&pb.FlowMessage{SrcAddr: ip("2001:db8:1::5"), DstAddr: ip("2001:db8:9000::1"), SamplerAddress: ip("::ffff:192.0.2.253"), SamplingRate: 0},
			Options{},
			pb.Enrichment{SrcCountry: "JP", SrcAs: 64510, SrcAsName: "Doc Six", SrcNetName: "v6-cust-b", SrcNetRole: "customer", SrcNetSite: "lon1",
				DstNetName: "v6-doc", DstNetRole: "customer"}},
		{"unknown everything, no addresses",
			&pb.FlowMessage{SrcAddr: ip("203.0.113.5"), SamplerAddress: nil},
			Options{},
			pb.Enrichment{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e pb.Enrichment
			var c sources.LookupCounts
			e.ExporterName = "stale" // Enrich resets
			Enrich(set, tc.m, &e, tc.o, &c)
			if e != tc.want {
				t.Errorf("got  %+v\nwant %+v", e, tc.want)
			}
			var lookups uint64
			for s := range c.Hit {
				lookups += c.Hit[s] + c.Miss[s]
			}
			want := uint64(7) // country, asn, network twice; exporter
			if tc.want.ExporterName != "" {
				want += 2 // interfaces
			}
			if lookups != want {
				t.Errorf("%d lookups counted, want %d", lookups, want)
			}
		})
	}
}

// TestTransform: every frame keeps its bytes (unknown fields included)
// and gains the enrichment; bad records fail whole with the right reason.
func TestTransform(t *testing.T) {
	l, set := loadSet(t)
	tr := NewTransform(l, Options{})
	values, tot := flowtest.Records(5, 300, 3, time.Now().Add(-time.Hour))
	// A custom field (number 4000, as a goflow2 mapping adds) on every frame.
	var in []byte
	var frames [][]byte
	for _, v := range values {
		if err := pb.ForEachFrame(v, func(f []byte) error {
			f = protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), f...), 4000, protowire.VarintType), 77)
			frames = append(frames, f)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range frames {
		in = protowire.AppendBytes(in, f)
	}
	out, flows, err := tr.Transform([]byte("keep"), in)
	if err != nil || int64(flows) != tot.Flows {
		t.Fatalf("Transform: %d flows, %v; want %d, nil", flows, err, tot.Flows)
	}
	if !bytes.HasPrefix(out, []byte("keep")) {
		t.Fatal("Transform overwrote dst")
	}
	i := 0
	var m pb.FlowMessage
	err = pb.ForEachFrame(out[4:], func(f []byte) error {
		if !bytes.HasPrefix(f, frames[i]) {
			t.Fatalf("frame %d does not start with the input frame's bytes", i)
		}
		if err := m.DecodeWire(frames[i]); err != nil {
			return err
		}
		var want pb.Enrichment
		Enrich(set, &m, &want, Options{}, new(sources.LookupCounts))
		if !bytes.Equal(f[len(frames[i]):], want.AppendWire(nil)) {
			t.Fatalf("frame %d: appended bytes differ from the enrichment", i)
		}
		i++
		return nil
	})
	if err != nil || i != len(frames) {
		t.Fatalf("output: %d frames, %v; want %d", i, err, len(frames))
	}

	good := values[0]
	for _, tc := range []struct {
		value  []byte
		reason string
	}{
		{nil, ReasonEmpty},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ReasonBadLength},
		{[]byte{0xff, 0xff, 0x7f}, ReasonTooLarge},
		{good[:len(good)-1], ReasonTruncated},
		{append(append([]byte(nil), good...), 0x03, 0xff, 0xff, 0xff), ReasonBadMessage},
	} {
		out, n, err := tr.Transform([]byte("x"), tc.value)
		if err == nil || Reason(err) != tc.reason || n != 0 || string(out) != "x" {
			t.Errorf("%q: out %q, %d flows, error %v (reason %q); want x, 0, reason %q", tc.value, out, n, err, Reason(err), tc.reason)
		}
		if errors.Is(err, pb.ErrBadMessage) != (tc.reason == ReasonBadMessage) {
			t.Errorf("%q: %v does not wrap the pb sentinel of %s", tc.value, err, tc.reason)
		}
	}
}

func TestTransformAllocs(t *testing.T) {
	l, _ := loadSet(t)
	tr := NewTransform(l, Options{})
	values, _ := flowtest.Records(6, 100, 10, time.Now().Add(-time.Hour))
	buf := make([]byte, 0, 1<<20)
	allocs := testing.AllocsPerRun(50, func() {
		out := buf[:0]
		for _, v := range values {
			out, _, _ = tr.Transform(out, v)
		}
		tr.EndBatch()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 100 flows, want 0", allocs)
	}
}

// TestTransformKeepsOversizedFlow: a flow the enrichment would push above
// pb.MaxMessageSize (which readers reject) goes out unchanged.
func TestTransformKeepsOversizedFlow(t *testing.T) {
	l, _ := loadSet(t)
	tr := NewTransform(l, Options{})
	m := &pb.FlowMessage{SrcAddr: ip("192.0.2.7"), SamplerAddress: ip("192.0.2.250"), InIf: 1}
	frame := m.AppendWire(nil)
	// Pad with an unknown bytes field up to 10 bytes below the limit.
	pad := pb.MaxMessageSize - 10 - len(frame) - 3 - 3
	frame = protowire.AppendBytes(protowire.AppendTag(frame, 4001, protowire.BytesType), make([]byte, pad))
	if len(frame) > pb.MaxMessageSize || len(frame) < pb.MaxMessageSize-20 {
		t.Fatalf("test frame is %d bytes", len(frame))
	}
	value := protowire.AppendBytes(nil, frame)
	out, n, err := tr.Transform(nil, value)
	if err != nil || n != 1 || !bytes.Equal(out, value) {
		t.Fatalf("got %d bytes, %d flows, %v; want the %d input bytes unchanged, 1, nil", len(out), n, err, len(value))
	}
	small := protowire.AppendBytes(nil, m.AppendWire(nil))
	if out, _, _ := tr.Transform(nil, small); len(out) <= len(small) {
		t.Fatal("a small flow was not enriched")
	}
}

// TestTransformNotTwice: an already enriched flow (the enricher's own
// output fed back, say) goes out unchanged: a second copy of a string
// field reads as empty in ClickHouse.
func TestTransformNotTwice(t *testing.T) {
	l, _ := loadSet(t)
	tr := NewTransform(l, Options{})
	values, _ := flowtest.Records(8, 50, 5, time.Now().Add(-time.Hour))
	for _, v := range values {
		once, _, err := tr.Transform(nil, v)
		if err != nil || len(once) <= len(v) {
			t.Fatalf("first pass: %d bytes from %d, %v", len(once), len(v), err)
		}
		twice, _, err := tr.Transform(nil, once)
		if err != nil || !bytes.Equal(twice, once) {
			t.Fatalf("second pass changed the record (%d bytes to %d), %v", len(once), len(twice), err)
		}
	}
}
