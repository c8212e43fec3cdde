package pb_test

// The hand-written codec (codec.go) against protobuf-go, the reference: any
// drift between the two, or between flow.proto and codec.go, fails here.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// protoAppendDelimited is the previous, reflection-driven AppendDelimited:
// the reference for the tests and the baseline for the benchmarks.
func protoAppendDelimited(dst []byte, m *pb.FlowMessage) ([]byte, error) {
	size := proto.Size(m)
	dst = protowire.AppendVarint(dst, uint64(size))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(dst, m)
}

// protoUnmarshalRecord is the previous, reflection-driven UnmarshalRecord.
func protoUnmarshalRecord(value []byte, m *pb.FlowMessage, fn func(*pb.FlowMessage) error) error {
	return pb.ForEachFrame(value, func(msg []byte) error {
		m.Reset()
		if err := proto.Unmarshal(msg, m); err != nil {
			return fmt.Errorf("%w: %v", pb.ErrBadMessage, err)
		}
		return fn(m)
	})
}

// checkEncode: AppendWire, WireSize and AppendDelimited agree with
// protobuf-go, byte for byte.
func checkEncode(t *testing.T, m *pb.FlowMessage) []byte {
	t.Helper()
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte{0xAA} // appends after existing content
	if got := m.AppendWire(prefix); !bytes.Equal(got[1:], want) || got[0] != 0xAA {
		t.Fatalf("AppendWire differs from proto.Marshal for %v:\n got %x\nwant %x", m, got[1:], want)
	}
	if got, want := m.WireSize(), proto.Size(m); got != want {
		t.Fatalf("WireSize = %d, proto.Size = %d for %v", got, want, m)
	}
	got, _ := pb.AppendDelimited(prefix, m)
	ref, _ := protoAppendDelimited(prefix, m)
	if !bytes.Equal(got, ref) {
		t.Fatalf("AppendDelimited differs from the proto-based one for %v:\n got %x\nwant %x", m, got, ref)
	}
	return want
}

// checkDecode: DecodeWire, into a message holding leftovers of another,
// accepts and rejects what proto.Unmarshal does and reads the same message,
// unknown fields aside (DecodeWire skips them).
func checkDecode(t testing.TB, wire []byte, reused *pb.FlowMessage) {
	t.Helper()
	var want pb.FlowMessage
	wantErr := proto.Unmarshal(wire, &want)
	gotErr := reused.DecodeWire(wire)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("input %x: DecodeWire error %v, proto.Unmarshal error %v", wire, gotErr, wantErr)
	}
	if gotErr != nil {
		if !errors.Is(gotErr, pb.ErrBadMessage) {
			t.Fatalf("input %x: error %v does not wrap ErrBadMessage", wire, gotErr)
		}
		return
	}
	want.ProtoReflect().SetUnknown(nil)
	if !proto.Equal(reused, &want) {
		t.Fatalf("input %x: DecodeWire read\n %v\nproto.Unmarshal read\n %v", wire, reused, &want)
	}
	if len(reused.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("input %x: DecodeWire kept unknown fields", wire)
	}
	// DecodeWireInterned reads the same, with a table that holds the
	// strings of every input checked before (and whatever collided).
	interned.m.Reset()
	if err := interned.m.DecodeWireInterned(wire, &interned.in); err != nil || !proto.Equal(&interned.m, &want) {
		t.Fatalf("input %x: DecodeWireInterned error %v, read\n %v\nproto.Unmarshal read\n %v", wire, err, &interned.m, &want)
	}
}

// interned is checkDecode's state for DecodeWireInterned, kept across
// inputs (the tests of this package do not run in parallel).
var interned struct {
	m  pb.FlowMessage
	in pb.Interner
}

// dirty is a message with every field set, to check that DecodeWire
// resets what the input does not set.
func dirty() *pb.FlowMessage {
	m := &pb.FlowMessage{}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		r.Set(fields.Get(i), distinctValue(fields.Get(i), i))
	}
	return m
}

// edgeValues are values of fd's kind that stress the varint and length
// encodings: one byte, the first two-byte value, the largest.
func edgeValues(fd protoreflect.FieldDescriptor) []protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.Uint32Kind:
		var vs []protoreflect.Value
		for _, v := range []uint32{1, 127, 128, 16383, 16384, 1 << 28, math.MaxUint32} {
			vs = append(vs, protoreflect.ValueOfUint32(v))
		}
		return vs
	case protoreflect.Uint64Kind:
		var vs []protoreflect.Value
		for _, v := range []uint64{1, 127, 128, 1 << 35, 1 << 56, 1 << 63, math.MaxUint64} {
			vs = append(vs, protoreflect.ValueOfUint64(v))
		}
		return vs
	case protoreflect.BytesKind:
		var vs []protoreflect.Value
		for _, n := range []int{1, 4, 16, 127, 128, 300} {
			vs = append(vs, protoreflect.ValueOfBytes(bytes.Repeat([]byte{byte(n)}, n)))
		}
		return vs
	case protoreflect.EnumKind:
		// Proto3 enums are open: unnamed and negative numbers travel too.
		var vs []protoreflect.Value
		for _, v := range []protoreflect.EnumNumber{1, 4, 99, 1 << 20, -1, math.MinInt32, math.MaxInt32} {
			vs = append(vs, protoreflect.ValueOfEnum(v))
		}
		return vs
	case protoreflect.BoolKind:
		return []protoreflect.Value{protoreflect.ValueOfBool(true)}
	case protoreflect.StringKind:
		// ASCII, multi-byte runes (and U+FFFD itself, valid UTF-8), and
		// lengths around the one- and two-byte length prefixes.
		vs := []protoreflect.Value{
			protoreflect.ValueOfString("x"), protoreflect.ValueOfString("CH"),
			protoreflect.ValueOfString("Zürich 東京 🚀"), protoreflect.ValueOfString("\uFFFD"),
		}
		for _, n := range []int{127, 128, 300} {
			vs = append(vs, protoreflect.ValueOfString(strings.Repeat("é", n/2)+strings.Repeat("a", n%2)))
		}
		return vs
	}
	panic(fmt.Sprintf("test needs values for kind %v (field %s)", fd.Kind(), fd.Name()))
}

// TestCodecEachField sets one field at a time, for every field of the
// descriptor: a field missing from codec.go cannot pass.
func TestCodecEachField(t *testing.T) {
	fields := ourFields()
	reused := dirty()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		t.Run(string(fd.Name()), func(t *testing.T) {
			for _, v := range edgeValues(fd) {
				m := &pb.FlowMessage{}
				m.ProtoReflect().Set(fd, v)
				wire := checkEncode(t, m)
				if len(wire) == 0 {
					t.Fatalf("value %v encodes to nothing", v)
				}
				checkDecode(t, wire, reused)
				if !proto.Equal(reused, m) {
					t.Fatalf("value %v: decoded %v", v, reused)
				}
			}
		})
	}
}

// randomValue is a random non-zero value of fd's kind, with random varint
// and length sizes.
func randomValue(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	bits := func(max int) uint64 { // non-zero, 1 to max significant bits
		n := 1 + rng.IntN(max)
		return rng.Uint64()>>(64-n) | 1<<(n-1)
	}
	switch fd.Kind() {
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(bits(32)))
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(bits(64))
	case protoreflect.BytesKind:
		n := 1 + rng.IntN(20)
		if rng.IntN(10) == 0 {
			n = 100 + rng.IntN(300)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	case protoreflect.EnumKind:
		v := int32(bits(32))
		if rng.IntN(2) == 0 {
			v = 1 + rng.Int32N(4)
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(v))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true) // false is proto3's zero
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randomString(rng))
	}
	panic(fmt.Sprintf("test needs values for kind %v (field %s)", fd.Kind(), fd.Name()))
}

// randomString is a non-empty valid UTF-8 string of 1 to 40 runes (now and
// then 100 to 200) from one- to four-byte ranges.
func randomString(rng *rand.Rand) string {
	n := 1 + rng.IntN(40)
	if rng.IntN(10) == 0 {
		n = 100 + rng.IntN(100)
	}
	ranges := [][2]rune{{0x20, 0x7f}, {0x80, 0x800}, {0x800, 0xd800}, {0x10000, 0x10ffff}}
	var sb strings.Builder
	for range n {
		r := ranges[rng.IntN(len(ranges))]
		sb.WriteRune(r[0] + rng.Int32N(r[1]-r[0]))
	}
	return sb.String()
}

// TestCodecRandom: messages with every field set (even seeds) or a random
// subset (odd seeds), random values, decoded one after the other into the
// same message as UnmarshalRecord does.
func TestCodecRandom(t *testing.T) {
	fields := ourFields()
	reused := dirty()
	for seed := range uint64(2000) {
		rng := rand.New(rand.NewPCG(seed, 42))
		m := &pb.FlowMessage{}
		r := m.ProtoReflect()
		for i := 0; i < fields.Len(); i++ {
			if seed%2 == 0 || rng.IntN(2) == 0 {
				r.Set(fields.Get(i), randomValue(rng, fields.Get(i)))
			}
		}
		wire := checkEncode(t, m)
		checkDecode(t, wire, reused)
		if !proto.Equal(reused, m) {
			t.Fatalf("seed %d: decoded\n %v\nwant\n %v", seed, reused, m)
		}
	}
}

// fillAll sets every field of a goflow2 message, repeated ones with
// several elements.
func fillAll(rng *rand.Rand, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !fd.IsList() {
			m.Set(fd, randomValue(rng, fd))
			continue
		}
		l := m.Mutable(fd).List()
		for range 1 + rng.IntN(5) {
			l.Append(randomValue(rng, fd))
		}
	}
}

// TestDecodeGoflow2 reads goflow2's own messages, every field set (packed
// repeated ones, the layer_stack enum list, mpls_ip's repeated bytes...),
// as proto.Unmarshal does; and re-encodes what proto.Unmarshal kept,
// unknown fields included, as proto.Marshal does.
func TestDecodeGoflow2(t *testing.T) {
	reused := dirty()
	for seed := range uint64(500) {
		rng := rand.New(rand.NewPCG(seed, 7))
		src := &flowpb.FlowMessage{}
		fillAll(rng, src.ProtoReflect())
		if len(src.AsPath) == 0 || len(src.LayerStack) == 0 || len(src.MplsLabel) == 0 || len(src.BgpCommunities) == 0 {
			t.Fatal("fillAll left a repeated field empty")
		}
		wire, err := proto.Marshal(src)
		if err != nil {
			t.Fatal(err)
		}
		checkDecode(t, wire, reused)
		if reused.SrcAddr == nil || reused.TimeReceivedNs == 0 {
			t.Fatalf("seed %d: decoded %v, fields missing", seed, reused)
		}

		var withUnknown pb.FlowMessage
		if err := proto.Unmarshal(wire, &withUnknown); err != nil {
			t.Fatal(err)
		}
		if len(withUnknown.ProtoReflect().GetUnknown()) == 0 {
			t.Fatal("goflow2's extra fields did not come through as unknown fields")
		}
		checkEncode(t, &withUnknown)
	}
}

// wireCases are inputs at the edges of the wire format, each to be read
// alike by DecodeWire and proto.Unmarshal. Also the fuzzer's seeds.
func wireCases() map[string][]byte {
	v := func(x uint64) []byte { return protowire.AppendVarint(nil, x) }
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	good, _ := proto.Marshal(sampleFlows()[0])
	return map[string][]byte{
		"empty":                          {},
		"good":                           good,
		"good twice (last wins)":         cat(good, good[:len(good)/2]),
		"repeated scalar (last wins)":    cat(tag(9, protowire.VarintType), v(5), tag(9, protowire.VarintType), v(7)),
		"repeated bytes (last wins)":     cat(tag(6, protowire.BytesType), v(4), []byte{1, 2, 3, 4}, tag(6, protowire.BytesType), v(1), []byte{9}),
		"empty bytes field":              cat(tag(6, protowire.BytesType), v(0)),
		"bytes field then empty":         cat(tag(6, protowire.BytesType), v(2), []byte{1, 2}, tag(6, protowire.BytesType), v(0)),
		"uint32 field over 32 bits":      cat(tag(4, protowire.VarintType), v(1<<40|5)),
		"enum over 32 bits":              cat(tag(1, protowire.VarintType), v(1<<40|3)),
		"enum negative":                  cat(tag(1, protowire.VarintType), v(math.MaxUint64)),
		"overlong varint":                cat(tag(9, protowire.VarintType), []byte{0x81, 0x80, 0x80, 0x00}),
		"overlong tag":                   cat([]byte{0xc8, 0x80, 0x00}, v(3)),
		"10-byte varint overflow":        cat(tag(9, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x02}),
		"10-byte varint max":             cat(tag(9, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x01}),
		"11-byte varint":                 cat(tag(9, protowire.VarintType), bytes.Repeat([]byte{0x80}, 10), []byte{0x00}),
		"known field as fixed64":         cat(tag(9, protowire.Fixed64Type), make([]byte, 8)),
		"known field as fixed32":         cat(tag(4, protowire.Fixed32Type), make([]byte, 4)),
		"known varint field as bytes":    cat(tag(3, protowire.BytesType), v(2), []byte{1, 2}),
		"known bytes field as varint":    cat(tag(6, protowire.VarintType), v(300)),
		"known field as group":           cat(tag(9, protowire.StartGroupType), tag(9, protowire.EndGroupType)),
		"fixed32 cut short":              cat(tag(5, protowire.Fixed32Type), []byte{1, 2}),
		"fixed64 cut short":              cat(tag(5, protowire.Fixed64Type), []byte{1, 2, 3, 4, 5, 6, 7}),
		"bytes cut short":                cat(tag(6, protowire.BytesType), v(5), []byte{1}),
		"bytes length overflow":          cat(tag(6, protowire.BytesType), v(math.MaxUint64)),
		"unknown packed":                 cat(tag(102, protowire.BytesType), v(3), []byte{1, 0x80, 1}),
		"unknown group":                  cat(tag(5, protowire.StartGroupType), tag(1, protowire.VarintType), v(1), tag(5, protowire.EndGroupType), tag(9, protowire.VarintType), v(1)),
		"nested groups":                  cat(tag(5, protowire.StartGroupType), tag(6, protowire.StartGroupType), tag(6, protowire.EndGroupType), tag(5, protowire.EndGroupType)),
		"group without end":              cat(tag(5, protowire.StartGroupType), tag(1, protowire.VarintType), v(1)),
		"group with wrong end":           cat(tag(5, protowire.StartGroupType), tag(6, protowire.EndGroupType)),
		"stray end group":                cat(tag(5, protowire.EndGroupType)),
		"reserved wire type 6":           cat([]byte{0x0e}, v(1)),
		"reserved wire type 7":           cat([]byte{0x0f}, v(1)),
		"field number 0":                 {0x00, 0x01},
		"largest field number":           cat(tag(protowire.MaxValidNumber, protowire.VarintType), v(1)),
		"field number 2^29":              cat(v(uint64(protowire.MaxValidNumber+1)<<3), v(1)),
		"field number 2^31-1":            cat(v(uint64(math.MaxInt32)<<3), v(1)),
		"reserved field number 19000":    cat(tag(19000, protowire.VarintType), v(1)),
		"tag cut short":                  {0x80},
		"value missing":                  cat(tag(9, protowire.VarintType)),
		"deep groups":                    cat(bytes.Repeat(tag(5, protowire.StartGroupType), 10001), bytes.Repeat(tag(5, protowire.EndGroupType), 10001)),
		"groups at the recursion limit":  cat(bytes.Repeat(tag(5, protowire.StartGroupType), 9999), bytes.Repeat(tag(5, protowire.EndGroupType), 9999)),
		"unknown fixed fields then good": cat(tag(50, protowire.Fixed32Type), make([]byte, 4), tag(51, protowire.Fixed64Type), make([]byte, 8), good),
		// The enricher's fields (2001-2020): strings must be UTF-8.
		"string":                     cat(tag(2001, protowire.BytesType), v(2), []byte("CH")),
		"string multi-byte":          cat(tag(2015, protowire.BytesType), v(7), []byte("Zürich")),
		"string twice (last wins)":   cat(tag(2003, protowire.BytesType), v(1), []byte("a"), tag(2003, protowire.BytesType), v(1), []byte("b")),
		"string then empty":          cat(tag(2011, protowire.BytesType), v(1), []byte("a"), tag(2011, protowire.BytesType), v(0)),
		"string invalid UTF-8":       cat(tag(2001, protowire.BytesType), v(2), []byte{'C', 0xff}),
		"string cut rune":            cat(tag(2014, protowire.BytesType), v(2), []byte{0xc3, 'a'}),
		"string surrogate":           cat(tag(2002, protowire.BytesType), v(3), []byte{0xed, 0xa0, 0x80}),
		"string as varint":           cat(tag(2001, protowire.VarintType), v(7)),
		"speed as bytes":             cat(tag(2016, protowire.BytesType), v(1), []byte{1}),
		"boundary negative":          cat(tag(2018, protowire.VarintType), v(math.MaxUint64)),
		"boundary over 32 bits":      cat(tag(2019, protowire.VarintType), v(1<<40|2)),
		"bool other than 1":          cat(tag(2020, protowire.VarintType), v(2)),
		"bool over 32 bits":          cat(tag(2020, protowire.VarintType), v(1<<40)),
		"past the enricher's fields": cat(tag(2021, protowire.BytesType), v(1), []byte{0xff}),
	}
}

// TestAppendWireInvalidUTF8: proto.Marshal refuses a string field that is
// not UTF-8; AppendWire writes what proto.Marshal writes for the string
// made valid by strings.ToValidUTF8, and WireSize agrees.
func TestAppendWireInvalidUTF8(t *testing.T) {
	for _, s := range []string{"\xff", "a\xffb", "a\xff\xfe\xfdb", "\xc3", "ok\xe2\x82", "\xed\xa0\x80", "é\x80é\x80\x80", strings.Repeat("\x80", 200), "abcdefgh\xffabcdefgh", "abcdefghijklmno\xe2\x82", "abcdefghijklmnopqrstuvwxyzABCDEFG\xc3"} {
		m := &pb.FlowMessage{SrcAsName: s, OutIfDescription: "fine " + s, Bytes: 1}
		if _, err := proto.Marshal(m); err == nil {
			t.Fatalf("%q: proto.Marshal accepts it; not a test of invalid UTF-8", s)
		}
		valid := &pb.FlowMessage{SrcAsName: strings.ToValidUTF8(s, "\uFFFD"), OutIfDescription: strings.ToValidUTF8("fine "+s, "\uFFFD"), Bytes: 1}
		want, err := proto.Marshal(valid)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.AppendWire(nil); !bytes.Equal(got, want) {
			t.Errorf("%q: AppendWire\n got %x\nwant %x", s, got, want)
		}
		if got := m.WireSize(); got != len(want) {
			t.Errorf("%q: WireSize %d, want %d", s, got, len(want))
		}
	}
}

func TestDecodeWireCases(t *testing.T) {
	reused := dirty()
	for name, wire := range wireCases() {
		t.Run(name, func(t *testing.T) { checkDecode(t, wire, reused) })
	}
}

// TestDecodeWireOwnsBytes: decoded bytes fields never alias the input, and
// a shorter address after a longer one reuses the array without leftovers.
func TestDecodeWireOwnsBytes(t *testing.T) {
	var m pb.FlowMessage
	v6 := &pb.FlowMessage{SrcAddr: bytes.Repeat([]byte{0x20}, 16)}
	v4 := &pb.FlowMessage{SrcAddr: []byte{192, 0, 2, 1}}
	wire := v6.AppendWire(nil)
	if err := m.DecodeWire(wire); err != nil {
		t.Fatal(err)
	}
	clear(wire)
	if !bytes.Equal(m.SrcAddr, v6.SrcAddr) {
		t.Fatalf("src_addr changed with the input: %x", m.SrcAddr)
	}
	first := &m.SrcAddr[0]
	if err := m.DecodeWire(v4.AppendWire(nil)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.SrcAddr, v4.SrcAddr) || &m.SrcAddr[0] != first {
		t.Fatalf("src_addr %x, reused array: %v", m.SrcAddr, &m.SrcAddr[0] == first)
	}
	wire = sampleFlows()[0].AppendWire(nil)
	if allocs := testing.AllocsPerRun(100, func() {
		if err := m.DecodeWire(wire); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("DecodeWire into a used message allocates %v times", allocs)
	}
}

// FuzzDecode: for any input, DecodeWire and proto.Unmarshal agree on
// success and, on success, on the message (unknown fields aside); what
// decodes re-encodes as proto.Marshal would.
func FuzzDecode(f *testing.F) {
	for _, wire := range wireCases() {
		if len(wire) < 1024 { // the deep-group cases only slow the fuzzer down
			f.Add(wire)
		}
	}
	reused := dirty()
	f.Fuzz(func(t *testing.T, wire []byte) {
		checkDecode(t, wire, reused)
		if reused.DecodeWire(wire) == nil {
			got := reused.AppendWire(nil)
			want, err := proto.Marshal(reused)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("re-encoding %v: got %x, proto.Marshal %x (%v)", reused, got, want, err)
			}
		}
	})
}

// TestAppendDelimitedPrefixSizes: messages on each side of the one-, two-
// and three-byte length prefixes, appended after existing content.
func TestAppendDelimitedPrefixSizes(t *testing.T) {
	sizes := map[int]bool{}
	for _, around := range []int{0, 128, 1 << 14, pb.MaxMessageSize} {
		for n := max(around-8, 0); n <= around+8; n++ {
			m := &pb.FlowMessage{BgpNextHop: make([]byte, n)}
			got, _ := pb.AppendDelimited([]byte("head"), m)
			want, _ := protoAppendDelimited([]byte("head"), m)
			if !bytes.Equal(got, want) {
				t.Fatalf("bgp_next_hop of %d bytes: AppendDelimited and the proto-based one disagree", n)
			}
			var back pb.FlowMessage
			err := pb.UnmarshalRecord(got[4:], &back, func(*pb.FlowMessage) error { return nil })
			if (err != nil) != (proto.Size(m) > pb.MaxMessageSize) || err == nil && !proto.Equal(&back, m) {
				t.Fatalf("bgp_next_hop of %d bytes: read back error %v", n, err)
			}
			sizes[len(got)-4-proto.Size(m)] = true
		}
	}
	if len(sizes) != 3 {
		t.Fatalf("length prefixes of %d distinct sizes, want 1, 2 and 3 bytes", len(sizes))
	}
}
