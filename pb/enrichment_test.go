package pb_test

// AppendEnrichedFrame against protobuf-go: the enriched frame must read, with
// proto.Unmarshal, as the original message with the enrichment applied, and
// must carry the original bytes untouched.

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// typicalEnrichment is what the enricher adds to most flows: countries, AS
// and network names, the exporter and both interfaces; no overrides.
func typicalEnrichment() *pb.Enrichment {
	return &pb.Enrichment{
		SrcCountry: "US", DstCountry: "CH",
		SrcAsName: "EXAMPLE-TRANSIT", DstAsName: "Example Customer AG",
		SrcNetName: "internet", DstNetName: "zurich-dc1-servers",
		SrcNetRole: "external", DstNetRole: "servers",
		SrcNetSite: "", DstNetSite: "zrh1",
		ExporterName: "edge1.zrh1",
		InIfName:     "et-0/0/1", OutIfName: "ae12.100",
		InIfDescription: "Transit: Example Transit [10G]", OutIfDescription: "dc1 servers",
		InIfSpeed: 10_000_000_000, OutIfSpeed: 40_000_000_000,
		InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL, OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL,
	}
}

// splitFrame removes the length prefix from one enriched frame, checking
// that it covers the rest exactly.
func splitFrame(t testing.TB, framed []byte) []byte {
	t.Helper()
	size, n := protowire.ConsumeVarint(framed)
	if n < 0 || uint64(len(framed)-n) != size {
		t.Fatalf("length prefix %d (%d bytes) does not cover the %d bytes after it", size, n, len(framed)-n)
	}
	return framed[n:]
}

// applyEnrichment is the reference: every non-zero field of e set on m, by
// Go field name, strings made valid UTF-8 as strings.ToValidUTF8 does.
func applyEnrichment(m *pb.FlowMessage, e *pb.Enrichment) {
	ev, mv := reflect.ValueOf(e).Elem(), reflect.ValueOf(m).Elem()
	for i := range ev.NumField() {
		f := ev.Field(i)
		if f.IsZero() {
			continue
		}
		dst := mv.FieldByName(ev.Type().Field(i).Name)
		if f.Kind() == reflect.String {
			dst.SetString(strings.ToValidUTF8(f.String(), "\uFFFD"))
		} else {
			dst.Set(f)
		}
	}
}

// checkEnriched appends e to frame after existing content and checks the
// result against protobuf-go: framing, the original bytes as a prefix, the
// added bytes, WireSize, and proto.Unmarshal reading frame's message with e
// applied (unknown fields included). DecodeWire must read the same. It
// returns the enriched message body.
func checkEnriched(t testing.TB, frame []byte, e *pb.Enrichment, reused *pb.FlowMessage) []byte {
	t.Helper()
	head := []byte("head")
	out := pb.AppendEnrichedFrame(head, frame, e)
	if string(out[:4]) != "head" {
		t.Fatalf("existing content of dst changed: %q", out[:4])
	}
	body := splitFrame(t, out[4:])
	if !bytes.Equal(body[:len(frame)], frame) {
		t.Fatalf("the original frame is not a prefix of the enriched one:\n got %x\nwant %x", body[:len(frame)], frame)
	}
	extra := body[len(frame):]
	if !bytes.Equal(extra, e.AppendWire(nil)) || len(extra) != e.WireSize() {
		t.Fatalf("appended %x, AppendWire gives %x, WireSize %d", extra, e.AppendWire(nil), e.WireSize())
	}
	var want, got pb.FlowMessage
	if err := proto.Unmarshal(frame, &want); err != nil {
		t.Fatalf("test frame does not decode: %v", err)
	}
	applyEnrichment(&want, e)
	if err := proto.Unmarshal(body, &got); err != nil {
		t.Fatalf("proto.Unmarshal rejects the enriched frame: %v\n%x", err, body)
	}
	if !proto.Equal(&got, &want) {
		t.Fatalf("enriched frame reads\n %v\nwant\n %v", &got, &want)
	}
	checkDecode(t, body, reused)
	return body
}

// TestAppendEnrichedFrame: hand-written expectations, overrides included.
func TestAppendEnrichedFrame(t *testing.T) {
	v4, empty, v6 := sampleFlows()[0], sampleFlows()[1], sampleFlows()[2]
	enriched := proto.Clone(v4).(*pb.FlowMessage)
	enriched.SrcCountry, enriched.SrcAsName, enriched.InIfSpeed = "DE", "Old Name", 1000
	enriched.InIfBoundary = pb.FlowMessage_BOUNDARY_INTERNAL

	tests := []struct {
		name  string
		frame *pb.FlowMessage
		e     *pb.Enrichment
		want  func(m *pb.FlowMessage) // applied to a copy of frame
	}{
		{
			name: "typical, no overrides", frame: v4, e: typicalEnrichment(),
			want: func(m *pb.FlowMessage) {
				m.SrcCountry, m.DstCountry = "US", "CH"
				m.SrcAsName, m.DstAsName = "EXAMPLE-TRANSIT", "Example Customer AG"
				m.SrcNetName, m.DstNetName = "internet", "zurich-dc1-servers"
				m.SrcNetRole, m.DstNetRole, m.DstNetSite = "external", "servers", "zrh1"
				m.ExporterName, m.InIfName, m.OutIfName = "edge1.zrh1", "et-0/0/1", "ae12.100"
				m.InIfDescription, m.OutIfDescription = "Transit: Example Transit [10G]", "dc1 servers"
				m.InIfSpeed, m.OutIfSpeed = 10_000_000_000, 40_000_000_000
				m.InIfBoundary, m.OutIfBoundary = pb.FlowMessage_BOUNDARY_EXTERNAL, pb.FlowMessage_BOUNDARY_INTERNAL
				// SamplingRate 100, SrcAs 64500, DstAs 65001 stay.
			},
		},
		{
			name: "overrides replace, zero overrides keep", frame: v4,
			e: &pb.Enrichment{SamplingRate: 2048, SrcAs: 13335, ExporterName: "edge2"},
			want: func(m *pb.FlowMessage) {
				m.SamplingRate, m.SrcAs, m.ExporterName = 2048, 13335, "edge2" // DstAs 65001 stays
			},
		},
		{
			name: "overrides on a message without them", frame: empty,
			e:    &pb.Enrichment{SamplingRate: 1, SrcAs: 1, DstAs: math.MaxUint32},
			want: func(m *pb.FlowMessage) { m.SamplingRate, m.SrcAs, m.DstAs = 1, 1, math.MaxUint32 },
		},
		{
			name: "empty frame, typical", frame: empty, e: typicalEnrichment(),
			want: func(m *pb.FlowMessage) {
				applyEnrichment(m, typicalEnrichment()) // checked field by field in the first case
			},
		},
		{
			name: "IPv6 flow, interfaces only", frame: v6,
			e: &pb.Enrichment{InIfName: "xe-1/0/0", OutIfSpeed: 1, OutIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL},
			want: func(m *pb.FlowMessage) {
				m.InIfName, m.OutIfSpeed, m.OutIfBoundary = "xe-1/0/0", 1, pb.FlowMessage_BOUNDARY_EXTERNAL
			},
		},
		{
			name: "enriched twice: new values win, zero fields keep the old", frame: enriched,
			e: &pb.Enrichment{SrcAsName: "New Name", InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL},
			want: func(m *pb.FlowMessage) {
				m.SrcAsName, m.InIfBoundary = "New Name", pb.FlowMessage_BOUNDARY_EXTERNAL // SrcCountry DE, InIfSpeed 1000 stay
			},
		},
		{
			name: "invalid UTF-8 becomes U+FFFD", frame: v4,
			e: &pb.Enrichment{SrcAsName: "AS\xff\xfeName", DstNetName: "\x80", InIfDescription: "ok \xe2\x82 cut"},
			want: func(m *pb.FlowMessage) {
				m.SrcAsName, m.DstNetName, m.InIfDescription = "AS\uFFFDName", "\uFFFD", "ok \uFFFD cut"
			},
		},
		{
			name: "many-byte values", frame: v6,
			e: &pb.Enrichment{
				OutIfDescription: strings.Repeat("long description ", 20), InIfSpeed: math.MaxUint64,
				InIfBoundary: pb.FlowMessage_Boundary(-1), SrcAs: math.MaxUint32,
			},
			want: func(m *pb.FlowMessage) {
				m.OutIfDescription, m.InIfSpeed = strings.Repeat("long description ", 20), math.MaxUint64
				m.InIfBoundary, m.SrcAs = pb.FlowMessage_Boundary(-1), math.MaxUint32
			},
		},
	}
	reused := dirty()
	var record []byte
	var wants []*pb.FlowMessage
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := proto.Marshal(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			body := checkEnriched(t, frame, tt.e, reused)
			want := proto.Clone(tt.frame).(*pb.FlowMessage)
			tt.want(want)
			var got pb.FlowMessage
			if err := proto.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, want) {
				t.Fatalf("enriched frame reads\n %v\nwant\n %v", &got, want)
			}
			record = pb.AppendEnrichedFrame(record, frame, tt.e)
			wants = append(wants, want)
		})
	}
	// The frames of one record read back in order, as the enricher writes them.
	i := 0
	var m pb.FlowMessage
	if err := pb.UnmarshalRecord(record, &m, func(got *pb.FlowMessage) error {
		if !proto.Equal(got, wants[i]) {
			t.Errorf("record frame %d reads %v, want %v", i, got, wants[i])
		}
		i++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if i != len(tests) {
		t.Fatalf("record holds %d frames, want %d", i, len(tests))
	}
}

// field is one protobuf field of a frame as it is on the wire.
type field struct {
	num protowire.Number
	typ protowire.Type
	raw []byte // the whole field, tag included
}

func fieldsOf(t testing.TB, b []byte) []field {
	t.Helper()
	var fs []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			t.Fatalf("unreadable field at %x: %v", b, protowire.ParseError(n))
		}
		fs = append(fs, field{num, typ, b[:n]})
		b = b[n:]
	}
	return fs
}

// TestAppendEnrichedFrameKeepsUnknownFields: fields FlowMessage does not
// declare (goflow2's as_path and a mapping file's custom fields, of every
// wire type, before, between and after ours) come out byte for byte, and
// read back unchanged with protowire, with our FlowMessage (as unknown
// fields) and with goflow2's.
func TestAppendEnrichedFrameKeepsUnknownFields(t *testing.T) {
	var frame, unknown []byte
	add := func(known bool, b []byte) {
		frame = append(frame, b...)
		if !known {
			unknown = append(unknown, b...)
		}
	}
	v := protowire.AppendVarint
	tag := protowire.AppendTag
	add(false, v(tag(nil, 99, protowire.VarintType), 123456789))
	add(true, protowire.AppendBytes(tag(nil, 6, protowire.BytesType), []byte{192, 0, 2, 1}))
	add(true, v(tag(nil, 3, protowire.VarintType), 512))
	add(false, protowire.AppendBytes(tag(nil, 102, protowire.BytesType), v(v(nil, 64496), 64511))) // as_path, packed
	add(true, v(tag(nil, 14, protowire.VarintType), 64500))
	add(false, protowire.AppendBytes(tag(nil, 1000, protowire.BytesType), []byte("custom mapped field")))
	add(false, protowire.AppendFixed32(tag(nil, 1001, protowire.Fixed32Type), 0xdeadbeef))
	add(true, v(tag(nil, 9, protowire.VarintType), 1500))
	add(false, protowire.AppendFixed64(tag(nil, 3000, protowire.Fixed64Type), 0x0123456789abcdef))
	add(false, v(tag(nil, 3001, protowire.VarintType), math.MaxUint64))
	add(false, protowire.AppendBytes(tag(nil, 100000, protowire.BytesType), nil))
	for _, f := range fieldsOf(t, unknown) {
		if ourFields().ByNumber(f.num) != nil {
			t.Fatalf("test field #%d is one of ours", f.num)
		}
	}

	e := typicalEnrichment()
	e.SamplingRate, e.DstAs, e.SamplingRateFromExporter = 1000, 65010, true
	body := checkEnriched(t, frame, e, dirty())

	// protowire: the frame's fields first, unchanged, then exactly ours.
	got, orig := fieldsOf(t, body), fieldsOf(t, frame)
	if len(got) != len(orig)+21 { // typicalEnrichment sets 18 fields, plus 2 overrides and sampling_rate_from_exporter
		t.Fatalf("enriched frame has %d fields, want %d + 21", len(got), len(orig))
	}
	for i, f := range orig {
		if got[i].num != f.num || got[i].typ != f.typ || !bytes.Equal(got[i].raw, f.raw) {
			t.Errorf("field %d: got #%d %x, want #%d %x", i, got[i].num, got[i].raw, f.num, f.raw)
		}
	}
	var added []protowire.Number
	for _, f := range got[len(orig):] {
		added = append(added, f.num)
	}
	if want := []protowire.Number{3, 15, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2010, 2011, 2012, 2013, 2014, 2015, 2016, 2017, 2018, 2019, 2020}; !reflect.DeepEqual(added, want) {
		t.Errorf("added fields %v, want %v (src_net_site is empty)", added, want)
	}

	// Ours: the unknown fields kept whole, in order; the overrides won.
	var ours pb.FlowMessage
	if err := proto.Unmarshal(body, &ours); err != nil {
		t.Fatal(err)
	}
	if u := ours.ProtoReflect().GetUnknown(); !bytes.Equal(u, unknown) {
		t.Errorf("unknown fields\n got %x\nwant %x", u, unknown)
	}
	if ours.SamplingRate != 1000 || ours.SrcAs != 64500 || ours.DstAs != 65010 || ours.Bytes != 1500 {
		t.Errorf("sampling_rate %d src_as %d dst_as %d bytes %d, want 1000 64500 65010 1500", ours.SamplingRate, ours.SrcAs, ours.DstAs, ours.Bytes)
	}

	// goflow2's: its as_path survives, the overrides won, ours are unknown.
	var theirs flowpb.FlowMessage
	if err := proto.Unmarshal(body, &theirs); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(theirs.AsPath, []uint32{64496, 64511}) || theirs.SamplingRate != 1000 || theirs.DstAs != 65010 {
		t.Errorf("goflow2 reads as_path %v sampling_rate %d dst_as %d, want [64496 64511] 1000 65010", theirs.AsPath, theirs.SamplingRate, theirs.DstAs)
	}
}

// TestEnrichmentZeroAppendsNothing: a zero (or nil, or Reset) Enrichment
// adds no byte; the frame comes out as AppendDelimited frames the message.
func TestEnrichmentZeroAppendsNothing(t *testing.T) {
	m := sampleFlows()[0]
	frame := m.AppendWire(nil)
	framed, _ := pb.AppendDelimited(nil, m)
	full := typicalEnrichment()
	full.SamplingRate, full.SrcAs, full.DstAs = 1, 2, 3
	full.Reset()
	for name, e := range map[string]*pb.Enrichment{"zero": {}, "nil": nil, "reset": full} {
		if got := e.AppendWire([]byte("x")); string(got) != "x" {
			t.Errorf("%s: AppendWire added %x", name, got[1:])
		}
		if n := e.WireSize(); n != 0 {
			t.Errorf("%s: WireSize %d", name, n)
		}
		if got := pb.AppendEnrichedFrame(nil, frame, e); !bytes.Equal(got, framed) {
			t.Errorf("%s: AppendEnrichedFrame\n got %x\nwant %x", name, got, framed)
		}
	}
	if got := pb.AppendEnrichedFrame(nil, nil, nil); !bytes.Equal(got, []byte{0}) {
		t.Errorf("empty frame, nil enrichment: %x, want 00", got)
	}
}

// TestEnrichmentFieldsMatchProto: each of FlowMessage's fields from 2001 is
// an Enrichment field of the same Go name and type, and each Enrichment
// field alone appends exactly its own proto field.
func TestEnrichmentFieldsMatchProto(t *testing.T) {
	mt, et := reflect.TypeFor[pb.FlowMessage](), reflect.TypeFor[pb.Enrichment]()
	n := 0
	for i := range mt.NumField() {
		f := mt.Field(i)
		tag := f.Tag.Get("protobuf")
		if tag == "" {
			continue
		}
		num, err := strconv.Atoi(strings.Split(tag, ",")[1])
		if err != nil || num < 2001 {
			continue
		}
		n++
		if ef, ok := et.FieldByName(f.Name); !ok || ef.Type != f.Type {
			t.Errorf("FlowMessage.%s (#%d, %v) has no Enrichment field of that name and type", f.Name, num, f.Type)
		}
	}
	if n != 20 || et.NumField() != 20+3 {
		t.Fatalf("%d FlowMessage fields from 2001 and %d Enrichment fields, want 20 and 20+3 overrides", n, et.NumField())
	}
	for i := range et.NumField() {
		var e pb.Enrichment
		f := reflect.ValueOf(&e).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("v")
		case reflect.Uint32, reflect.Uint64:
			f.SetUint(300)
		case reflect.Int32:
			f.SetInt(2)
		case reflect.Bool:
			f.SetBool(true)
		default:
			t.Fatalf("Enrichment.%s: kind %v not covered", et.Field(i).Name, f.Kind())
		}
		fs := fieldsOf(t, e.AppendWire(nil))
		mf, _ := mt.FieldByName(et.Field(i).Name)
		want := ourFields().ByTextName(strings.Split(strings.Split(mf.Tag.Get("protobuf"), "name=")[1], ",")[0])
		if len(fs) != 1 || want == nil || fs[0].num != want.Number() {
			t.Errorf("Enrichment.%s alone appends %v, want field %v", et.Field(i).Name, fs, want)
		}
	}
}

// randomEnrichment sets each field of an Enrichment with probability 1/2
// (every field when all is set): random lengths and magnitudes, strings now
// and then with invalid UTF-8, out-of-range and negative boundaries.
func randomEnrichment(rng *rand.Rand, all bool) *pb.Enrichment {
	var e pb.Enrichment
	ev := reflect.ValueOf(&e).Elem()
	for i := range ev.NumField() {
		if !all && rng.IntN(2) == 0 {
			continue
		}
		f := ev.Field(i)
		switch f.Kind() {
		case reflect.String:
			s := randomString(rng)
			if rng.IntN(8) == 0 {
				at := rng.IntN(len(s) + 1)
				s = s[:at] + string([]byte{0x80 | byte(rng.IntN(0x40))}) + s[at:]
			}
			f.SetString(s)
		case reflect.Uint32:
			f.SetUint(1 + uint64(rng.Uint32N(math.MaxUint32)))
		case reflect.Uint64:
			f.SetUint(1 + rng.Uint64N(math.MaxUint64)>>rng.IntN(64))
		case reflect.Int32:
			b := int32(1 + rng.IntN(2))
			if rng.IntN(4) == 0 {
				b = rng.Int32() - rng.Int32()
			}
			f.SetInt(int64(b))
		case reflect.Bool:
			f.SetBool(true)
		}
	}
	return &e
}

// randomUnknown is 0 to 4 fields at numbers FlowMessage does not declare,
// of every wire type.
func randomUnknown(rng *rand.Rand) []byte {
	var b []byte
	for range rng.IntN(5) {
		num := protowire.Number(43 + rng.IntN(5000))
		if ourFields().ByNumber(num) != nil {
			continue
		}
		switch rng.IntN(4) {
		case 0:
			b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), rng.Uint64()>>rng.IntN(64))
		case 1:
			b = protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), []byte(randomString(rng)))
		case 2:
			b = protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), rng.Uint32())
		case 3:
			b = protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), rng.Uint64())
		}
	}
	return b
}

// TestAppendEnrichedFrameRandom: random messages (some already enriched)
// with unknown fields around them, and random enrichments, against
// protobuf-go.
func TestAppendEnrichedFrameRandom(t *testing.T) {
	fields := ourFields()
	reused := dirty()
	for seed := range uint64(2000) {
		rng := rand.New(rand.NewPCG(seed, 11))
		m := &pb.FlowMessage{}
		r := m.ProtoReflect()
		for i := 0; i < fields.Len(); i++ {
			if seed%4 == 0 || rng.IntN(2) == 0 {
				r.Set(fields.Get(i), randomValue(rng, fields.Get(i)))
			}
		}
		known, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		frame := append(append(randomUnknown(rng), known...), randomUnknown(rng)...)
		checkEnriched(t, frame, randomEnrichment(rng, seed%4 == 1), reused)
	}
}

// FuzzAppendEnrichedFrame: any frame protobuf-go reads, with any strings
// and numbers, enriches into what protobuf-go reads as the frame's message
// with the enrichment applied.
func FuzzAppendEnrichedFrame(f *testing.F) {
	for _, m := range sampleFlows() {
		f.Add(m.AppendWire(nil), "CH", "Example AS", uint64(10_000_000_000), int32(1))
	}
	f.Add([]byte{}, "\xff", "", uint64(0), int32(-1))
	f.Add(append(sampleFlows()[0].AppendWire(nil), 0xfa, 0x3e, 0x05, 'h', 'e', 'l', 'l', 'o'), "a\x80b", "ü", uint64(1), int32(2))
	reused := dirty()
	f.Fuzz(func(t *testing.T, frame []byte, s1, s2 string, u uint64, b int32) {
		if proto.Unmarshal(frame, &pb.FlowMessage{}) != nil {
			return
		}
		e := &pb.Enrichment{
			SrcCountry: s1, DstAsName: s2, InIfDescription: s1 + s2, OutIfName: s2,
			InIfSpeed: u, SamplingRate: u >> 3, SrcAs: uint32(u), DstAs: uint32(u >> 32),
			InIfBoundary: pb.FlowMessage_Boundary(b), OutIfBoundary: pb.FlowMessage_Boundary(b >> 1),
		}
		checkEnriched(t, frame, e, reused)
	})
}

// TestEnrichedAllocs: enriching into a reused buffer, and decoding an
// enriched flow into a message that read the same names before, allocate
// nothing.
func TestEnrichedAllocs(t *testing.T) {
	frame := sampleFlows()[0].AppendWire(nil)
	e := typicalEnrichment()
	dst := make([]byte, 0, 1024)
	if allocs := testing.AllocsPerRun(100, func() {
		dst = pb.AppendEnrichedFrame(dst[:0], frame, e)
	}); allocs != 0 {
		t.Errorf("AppendEnrichedFrame into a reused buffer allocates %v times", allocs)
	}
	body := splitFrame(t, dst)
	var m pb.FlowMessage
	if err := m.DecodeWire(body); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if err := m.DecodeWire(body); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("DecodeWire of the same enriched flow allocates %v times", allocs)
	}
	if m.InIfDescription != e.InIfDescription || m.OutIfBoundary != e.OutIfBoundary {
		t.Errorf("decoded in_if_description %q out_if_boundary %v", m.InIfDescription, m.OutIfBoundary)
	}
}

// TestDecodeWireInterned: the interner hands out one string per distinct
// name however the flows alternate, so decoding allocates only for a name
// it has not seen; invalid UTF-8 is refused whether or not valid names
// fill the table, and never enters it.
func TestDecodeWireInterned(t *testing.T) {
	names := []string{"GOOGLE", "NETFLIX-ASN", "Zürich Kabel AG", "東京 Net", "GOOGLE"}
	var bodies [][]byte
	for _, n := range names {
		e := typicalEnrichment()
		e.SrcAsName, e.DstAsName = n, n
		bodies = append(bodies, splitFrame(t, pb.AppendEnrichedFrame(nil, sampleFlows()[0].AppendWire(nil), e)))
	}
	var in pb.Interner
	var m pb.FlowMessage
	seen := map[string]*byte{}
	for round := range 3 {
		for i, body := range bodies {
			if err := m.DecodeWireInterned(body, &in); err != nil {
				t.Fatal(err)
			}
			if m.SrcAsName != names[i] || m.DstAsName != names[i] {
				t.Fatalf("round %d flow %d: as names %q, %q; want %q", round, i, m.SrcAsName, m.DstAsName, names[i])
			}
			p := unsafe.StringData(m.SrcAsName)
			if unsafe.StringData(m.DstAsName) != p {
				t.Errorf("round %d flow %d: src and dst AS name %q are two strings, want one", round, i, names[i])
			}
			if old, ok := seen[names[i]]; ok && old != p {
				t.Errorf("round %d flow %d: %q decoded into a new string", round, i, names[i])
			}
			seen[names[i]] = p
		}
	}
	if allocs := testing.AllocsPerRun(100, func() {
		for _, body := range bodies {
			if err := m.DecodeWireInterned(body, &in); err != nil {
				t.Fatal(err)
			}
		}
	}); allocs != 0 {
		t.Errorf("decoding flows whose names alternate allocates %v times with a warm interner, want 0", allocs)
	}
	bad := protowire.AppendBytes(protowire.AppendTag(bodies[0], 2003, protowire.BytesType), []byte("GOO\xffGLE"))
	for range 2 {
		if err := m.DecodeWireInterned(bad, &in); !errors.Is(err, pb.ErrBadMessage) {
			t.Fatalf("invalid UTF-8: error %v, want ErrBadMessage", err)
		}
	}
}

// protoEnrich is what enriching costs through protobuf-go: decode, set,
// encode, frame. The baseline for BenchmarkAppendEnrichedFrame; it sets
// only what typicalEnrichment sets.
func protoEnrich(dst, frame []byte, e *pb.Enrichment, m *pb.FlowMessage) ([]byte, error) {
	m.Reset()
	if err := proto.Unmarshal(frame, m); err != nil {
		return dst, err
	}
	m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName = e.SrcCountry, e.DstCountry, e.SrcAsName, e.DstAsName
	m.SrcNetName, m.DstNetName, m.SrcNetRole, m.DstNetRole = e.SrcNetName, e.DstNetName, e.SrcNetRole, e.DstNetRole
	m.DstNetSite, m.ExporterName, m.InIfName, m.OutIfName = e.DstNetSite, e.ExporterName, e.InIfName, e.OutIfName
	m.InIfDescription, m.OutIfDescription, m.InIfSpeed, m.OutIfSpeed = e.InIfDescription, e.OutIfDescription, e.InIfSpeed, e.OutIfSpeed
	m.InIfBoundary, m.OutIfBoundary = e.InIfBoundary, e.OutIfBoundary
	return protoAppendDelimited(dst, m)
}

func BenchmarkAppendEnrichedFrame(b *testing.B) {
	e := typicalEnrichment()
	for _, flow := range benchFlows() {
		frame := flow.m.AppendWire(nil)
		b.Run("wire/"+flow.name, func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				dst = pb.AppendEnrichedFrame(dst[:0], frame, e)
			}
			b.SetBytes(int64(len(dst)))
		})
		b.Run("proto/"+flow.name, func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			var m pb.FlowMessage
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = protoEnrich(dst[:0], frame, e, &m); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(dst)))
		})
	}
}

// TestAppendEnrichedFramePrefixSizes: bodies on each side of the one-, two-
// and three-byte length prefixes (AppendEnrichedFrame reserves two bytes and
// moves the body for the others), after existing content.
func TestAppendEnrichedFramePrefixSizes(t *testing.T) {
	e := &pb.Enrichment{SrcCountry: "CH", InIfSpeed: 1000} // 4 + 5 bytes
	extra := e.AppendWire(nil)
	sizes := map[int]bool{}
	for _, around := range []int{0, 128, 1 << 14, 1 << 21} {
		for n := max(around-12, 0); n <= around+4; n++ {
			m := &pb.FlowMessage{BgpNextHop: make([]byte, max(n-3-len(extra), 0))} // tag, length
			frame := m.AppendWire(nil)
			got := pb.AppendEnrichedFrame([]byte("head"), frame, e)
			want := append(protowire.AppendVarint([]byte("head"), uint64(len(frame)+len(extra))), frame...)
			want = append(want, extra...)
			if !bytes.Equal(got, want) {
				t.Fatalf("frame of %d bytes: enriched frame differs from the reference", len(frame))
			}
			sizes[len(got)-4-len(frame)-len(extra)] = true
		}
	}
	if len(sizes) != 4 {
		t.Fatalf("length prefixes of %d distinct sizes, want 1 to 4 bytes", len(sizes))
	}
}

func TestClipText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"aé", 2, "a"}, // é is 2 bytes: never cut inside it
		{"aé", 3, "aé"},
		{"日本", 5, "日"},
		{"", 0, ""},
	} {
		if got := pb.ClipText(c.in, c.max); got != c.want {
			t.Errorf("ClipText(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
