package pb_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// sampleFlows are small but varied messages, including an empty one (a
// zero-length frame is a valid, all-default FlowMessage).
func sampleFlows() []*pb.FlowMessage {
	return []*pb.FlowMessage{
		{
			Type: pb.FlowMessage_IPFIX, TimeReceivedNs: 1_700_000_000_123_456_789, SequenceNum: 42,
			SamplingRate: 100, SamplerAddress: []byte{192, 0, 2, 250},
			TimeFlowStartNs: 1_700_000_000_000_000_000, TimeFlowEndNs: 1_700_000_000_100_000_000,
			Bytes: 15000, Packets: 10, SrcAddr: []byte{198, 51, 100, 7}, DstAddr: []byte{203, 0, 113, 9},
			Etype: 0x800, Proto: 6, SrcPort: 443, DstPort: 50123, TcpFlags: 0x18, SrcAs: 64500, DstAs: 65001,
			SrcNet: 24, DstNet: 24, NextHop: []byte{203, 0, 113, 1}, InIf: 3, OutIf: 7,
		},
		{},
		{
			Type: pb.FlowMessage_SFLOW_5, SamplingRate: 1000, SamplerAddress: []byte{192, 0, 2, 251},
			Bytes: 1, Packets: 1, Etype: 0x86dd, Proto: 58,
			SrcAddr: bytes.Repeat([]byte{0x20}, 16), DstAddr: bytes.Repeat([]byte{0x01}, 16),
		},
	}
}

func appendAll(t testing.TB, flows []*pb.FlowMessage) []byte {
	var rec []byte
	for _, m := range flows {
		var err error
		if rec, err = pb.AppendDelimited(rec, m); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

func TestAppendDelimitedRoundTrip(t *testing.T) {
	flows := sampleFlows()
	rec := appendAll(t, flows)

	frames := 0
	if err := pb.ForEachFrame(rec, func([]byte) error { frames++; return nil }); err != nil {
		t.Fatal(err)
	}
	if frames != len(flows) {
		t.Fatalf("ForEachFrame saw %d frames, want %d", frames, len(flows))
	}

	var i int
	var m pb.FlowMessage
	err := pb.UnmarshalRecord(rec, &m, func(got *pb.FlowMessage) error {
		if !proto.Equal(got, flows[i]) {
			t.Errorf("message %d: got %v, want %v", i, got, flows[i])
		}
		i++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(flows) {
		t.Fatalf("UnmarshalRecord gave %d messages, want %d", i, len(flows))
	}

	// An error from fn stops the walk and comes back unchanged.
	stop := errors.New("stop")
	calls := 0
	err = pb.UnmarshalRecord(rec, &m, func(*pb.FlowMessage) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("fn error: got %v after %d calls, want %v after 1", err, calls, stop)
	}
}

// TestProtodelimReadsAppendDelimited: the standard reader (and goflow2's
// message type) reads our framing, and our reader reads the standard writer.
func TestProtodelimReadsAppendDelimited(t *testing.T) {
	flows := sampleFlows()
	rec := appendAll(t, flows)
	r := bufio.NewReader(bytes.NewReader(rec))
	for i, want := range flows {
		var got flowpb.FlowMessage
		if err := protodelim.UnmarshalFrom(r, &got); err != nil {
			t.Fatalf("protodelim message %d: %v", i, err)
		}
		wire, _ := proto.Marshal(want)
		var wantTheirs flowpb.FlowMessage
		if err := proto.Unmarshal(wire, &wantTheirs); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, &wantTheirs) {
			t.Errorf("message %d: got %v, want %v", i, &got, &wantTheirs)
		}
	}
	var extra flowpb.FlowMessage
	if err := protodelim.UnmarshalFrom(r, &extra); err != io.EOF {
		t.Fatalf("after the last message: got %v, want io.EOF", err)
	}

	var buf bytes.Buffer
	for _, m := range flows {
		if _, err := protodelim.MarshalTo(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(buf.Bytes(), rec) {
		t.Errorf("protodelim.MarshalTo and AppendDelimited disagree:\n%x\n%x", buf.Bytes(), rec)
	}
}

func TestFramingErrors(t *testing.T) {
	good := appendAll(t, sampleFlows()[:1])
	varint := func(v uint64) []byte { return protowire.AppendVarint(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name   string
		record []byte
		want   error
		frames int // messages handed to fn before the error
	}{
		{"empty", nil, pb.ErrEmptyRecord, 0},
		{"empty slice", []byte{}, pb.ErrEmptyRecord, 0},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), pb.ErrBadLength, 0},
		{"varint cut short", []byte{0x80}, pb.ErrBadLength, 0},
		{"bad length after a good frame", cat(good, []byte{0xff, 0xff}), pb.ErrBadLength, 1},
		{"too large", cat(varint(pb.MaxMessageSize+1), make([]byte, pb.MaxMessageSize+1)), pb.ErrMessageTooLarge, 0},
		{"absurd length", varint(1 << 62), pb.ErrMessageTooLarge, 0},
		{"truncated", cat(varint(10), []byte{8, 1, 9}), pb.ErrTruncated, 0},
		{"truncated second frame", cat(good, good[:len(good)-1]), pb.ErrTruncated, 1},
		{"field number zero", cat(varint(2), []byte{0x00, 0x01}), pb.ErrBadMessage, 0},
		{"invalid wire type", cat(varint(2), []byte{0x0f, 0x01}), pb.ErrBadMessage, 0},
		{"varint field cut short", cat(varint(2), []byte{0x48, 0x80}), pb.ErrBadMessage, 0},
		{"garbage after a good frame", cat(good, varint(3), []byte{0x62, 0x05, 0x01}), pb.ErrBadMessage, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m pb.FlowMessage
			frames := 0
			err := pb.UnmarshalRecord(tt.record, &m, func(*pb.FlowMessage) error { frames++; return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if frames != tt.frames {
				t.Fatalf("fn called %d times before the error, want %d", frames, tt.frames)
			}
		})
	}
}

var sentinels = []error{pb.ErrEmptyRecord, pb.ErrBadLength, pb.ErrMessageTooLarge, pb.ErrTruncated, pb.ErrBadMessage}

// FuzzUnmarshalRecord: any input either decodes or fails with one of the
// sentinel errors (fn never fails here); it never panics, and what decodes
// survives a re-encode.
func FuzzUnmarshalRecord(f *testing.F) {
	f.Add(appendAll(f, sampleFlows()))
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0x02, 0x00, 0x01})
	f.Add(bytes.Repeat([]byte{0xff}, 11))
	f.Fuzz(func(t *testing.T, record []byte) {
		var m pb.FlowMessage
		frames := 0
		err := pb.UnmarshalRecord(record, &m, func(got *pb.FlowMessage) error {
			frames++
			wire, err := proto.Marshal(got)
			if err != nil {
				t.Fatalf("re-encoding a decoded message: %v", err)
			}
			var again pb.FlowMessage
			if err := proto.Unmarshal(wire, &again); err != nil || !proto.Equal(got, &again) {
				t.Fatalf("decoded message does not survive a re-encode: %v", err)
			}
			return nil
		})
		if err == nil {
			if frames == 0 {
				t.Fatal("no error and no message")
			}
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error %v matches no sentinel", err)
	})
}

// The benchmarks run the hand-written codec ("wire") and the previous
// protobuf-go path ("proto") side by side.

// benchFlows: an IPv4 flow, under 128 bytes like most, and an IPv6 flow
// over 128 bytes, whose length prefix takes two bytes.
func benchFlows() []struct {
	name string
	m    *pb.FlowMessage
} {
	v4 := sampleFlows()[0]
	v6 := proto.Clone(v4).(*pb.FlowMessage)
	v6.Etype = 0x86dd
	v6.SrcAddr = bytes.Repeat([]byte{0x20}, 16)
	v6.DstAddr = bytes.Repeat([]byte{0x2a}, 16)
	v6.NextHop = bytes.Repeat([]byte{0xfe}, 16)
	v6.Ipv6FlowLabel = 0xbeef
	return []struct {
		name string
		m    *pb.FlowMessage
	}{{"v4", v4}, {"v6", v6}}
}

func BenchmarkAppendDelimited(b *testing.B) {
	for _, impl := range []struct {
		name string
		fn   func([]byte, *pb.FlowMessage) ([]byte, error)
	}{{"wire", pb.AppendDelimited}, {"proto", protoAppendDelimited}} {
		for _, flow := range benchFlows() {
			b.Run(impl.name+"/"+flow.name, func(b *testing.B) {
				buf := make([]byte, 0, 256)
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if buf, err = impl.fn(buf[:0], flow.m); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(len(buf)))
			})
		}
	}
}

func BenchmarkUnmarshalRecord(b *testing.B) {
	for _, impl := range []struct {
		name string
		fn   func([]byte, *pb.FlowMessage, func(*pb.FlowMessage) error) error
	}{{"wire", pb.UnmarshalRecord}, {"proto", protoUnmarshalRecord}} {
		for _, flow := range benchFlows() {
			b.Run(impl.name+"/"+flow.name, func(b *testing.B) {
				rec := appendAll(b, []*pb.FlowMessage{flow.m})
				var m pb.FlowMessage
				fn := func(*pb.FlowMessage) error { return nil }
				b.SetBytes(int64(len(rec)))
				b.ReportAllocs()
				for b.Loop() {
					if err := impl.fn(rec, &m, fn); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestFrameReason(t *testing.T) {
	for _, c := range []struct {
		value []byte
		want  string
	}{
		{nil, pb.ReasonEmpty},
		{[]byte{0x80}, pb.ReasonBadLength},
		{[]byte{0xff, 0xff, 0xff, 0x7f}, pb.ReasonTooLarge},
		{[]byte{5, 1}, pb.ReasonTruncated},
		{[]byte{2, 0xff, 0xff}, pb.ReasonBadMessage},
	} {
		var m pb.FlowMessage
		err := pb.UnmarshalRecord(c.value, &m, func(*pb.FlowMessage) error { return nil })
		if got := pb.FrameReason(err); got != c.want {
			t.Errorf("%x: FrameReason(%v) = %q, want %q", c.value, err, got, c.want)
		}
	}
	if got := pb.FrameReason(errors.New("not a framing error")); got != "" {
		t.Errorf("FrameReason of another error = %q, want \"\"", got)
	}
}
