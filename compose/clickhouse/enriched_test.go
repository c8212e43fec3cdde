package clickhouse_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestEnrichedFrames: ClickHouse reads the enricher's frames
// (pb.AppendEnrichedFrame: the collector's bytes, then the enrichment
// fields and overrides) as protobuf-go does. The flows table, which has
// no enrichment column, skips those fields and takes the later occurrence
// of sampling_rate and src_as; a table with a column for every field from
// 2001, typed from pb/flow.proto as TestKafkaColumnsMatchProto requires,
// reads each one.
func TestEnrichedFrames(t *testing.T) {
	s := schemaDB(t, true)
	full := &pb.Enrichment{
		SrcCountry: "US", DstCountry: "CH", SrcAsName: "EXAMPLE-TRANSIT", DstAsName: "Beispiel AG Zürich",
		SrcNetName: "internet", DstNetName: "dc1-servers", SrcNetRole: "external", DstNetRole: "servers",
		SrcNetSite: "ams1", DstNetSite: "zrh1", ExporterName: "edge1.zrh1",
		InIfName: "et-0/0/1", OutIfName: "ae12.100", InIfDescription: "Transit [10G]", OutIfDescription: "dc1",
		InIfSpeed: 10_000_000_000, OutIfSpeed: 40_000_000_000,
		InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL, OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL,
	}
	overrides := &pb.Enrichment{SamplingRate: 1000, SrcAs: 13335, InIfName: "xe-0/0/0"}
	var record []byte
	var want []*pb.FlowMessage // as protobuf-go reads each enriched frame
	for i, e := range []*pb.Enrichment{full, overrides, {}} {
		m := flowWith("198.51.100.7", "203.0.113.9")
		m.SequenceNum, m.SrcAs, m.DstAs = uint32(i), 64500, 65001
		start := len(record)
		record = pb.AppendEnrichedFrame(record, m.AppendWire(nil), e)
		var got pb.FlowMessage
		if err := pb.ForEachFrame(record[start:], func(msg []byte) error { return proto.Unmarshal(msg, &got) }); err != nil {
			t.Fatal(err)
		}
		want = append(want, &got)
	}
	if err := s.InsertProtobuf("flows", record, protoSchema(t)); err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		SamplingRate uint64
		SrcAS, DstAS uint32
	}
	if err := s.QueryInto("SELECT SamplingRate, SrcAS, DstAS FROM flows_raw ORDER BY SequenceNum", &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].SamplingRate != 10 || rows[0].SrcAS != 64500 ||
		rows[1].SamplingRate != 1000 || rows[1].SrcAS != 13335 || rows[1].DstAS != 65001 ||
		rows[2].SamplingRate != 10 || rows[2].SrcAS != 64500 {
		t.Fatalf("flows_raw read %+v, want sampling rates 10 1000 10, src_as 64500 13335 64500, dst_as 65001", rows)
	}

	// A table with the enrichment columns reads every field of every frame.
	fields := (&pb.FlowMessage{}).ProtoReflect().Descriptor().Fields()
	var cols, sel []string
	var enrichment []protoreflect.FieldDescriptor
	for i := 0; i < fields.Len(); i++ {
		if fd := fields.Get(i); fd.Number() >= 2001 || fd.Name() == "sequence_num" || fd.Name() == "sampling_rate" {
			enrichment = append(enrichment, fd)
			cols = append(cols, fmt.Sprintf("%s %s", fd.Name(), clickhouseType(fd)))
			sel = append(sel, fmt.Sprintf("toString(%s)", fd.Name()))
		}
	}
	if len(enrichment) != 20+2 {
		t.Fatalf("%d columns, want the 20 enrichment fields and 2 more", len(enrichment))
	}
	if err := s.Exec("CREATE TABLE enriched (" + strings.Join(cols, ", ") + ") ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertProtobuf("enriched", record, protoSchema(t)); err != nil {
		t.Fatal(err)
	}
	var got [][]string
	out, err := s.Run("SELECT "+strings.Join(sel, ", ")+" FROM enriched ORDER BY sequence_num", "TabSeparatedRaw")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		got = append(got, strings.Split(line, "\t"))
	}
	if len(got) != len(want) {
		t.Fatalf("enriched has %d rows, want %d:\n%s", len(got), len(want), out)
	}
	for r, m := range want {
		mr := m.ProtoReflect()
		for c, fd := range enrichment {
			v := mr.Get(fd)
			var w string
			switch fd.Kind() {
			case protoreflect.StringKind:
				w = v.String()
			case protoreflect.Uint32Kind, protoreflect.Uint64Kind:
				w = strconv.FormatUint(v.Uint(), 10)
			case protoreflect.EnumKind:
				w = string(fd.Enum().Values().ByNumber(v.Enum()).Name())
			case protoreflect.BoolKind:
				w = strconv.FormatBool(v.Bool())
			}
			if got[r][c] != w {
				t.Errorf("row %d column %s: ClickHouse read %q, protobuf-go %q", r, fd.Name(), got[r][c], w)
			}
		}
	}
	if got[0][2] != "US" || got[1][13] != "xe-0/0/0" || got[2][2] != "" {
		t.Errorf("rows %q: want src_country US, then in_if_name xe-0/0/0, then no enrichment", got)
	}
}

// TestFieldTwice pins how ClickHouse reads a field that occurs twice in one
// message, which the enricher's appending relies on: a varint (the
// sampling_rate, src_as, dst_as overrides; the boundaries) takes the last
// value, as in protobuf-go, but a string or bytes field reads as EMPTY
// (ClickHouse 26.9). So the enricher may override varints only, and must
// never append a string field the frame already has: enriching an already
// enriched frame would blank its names in ClickHouse.
func TestFieldTwice(t *testing.T) {
	s := schemaDB(t, true)
	if err := s.Exec("CREATE TABLE twice (sequence_num UInt32, sampling_rate UInt64, src_addr String, src_as_name String, src_country String, " +
		"in_if_boundary Enum8('BOUNDARY_UNDEFINED' = 0, 'BOUNDARY_EXTERNAL' = 1, 'BOUNDARY_INTERNAL' = 2)) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	str := func(b []byte, num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	seq := func(n uint64) []byte { return varint(nil, 4, n) }
	tests := []struct {
		msg  []byte
		want string // sampling_rate, src_addr, src_as_name, src_country, in_if_boundary
	}{
		{str(seq(1), 2003, "once"), "0\t\tonce\t\tBOUNDARY_UNDEFINED"},
		{varint(varint(seq(2), 3, 10), 3, 1000), "1000\t\t\t\tBOUNDARY_UNDEFINED"},
		{varint(varint(seq(3), 2018, 1), 2018, 2), "0\t\t\t\tBOUNDARY_INTERNAL"},
		{str(str(seq(4), 2003, "first"), 2003, "second"), "0\t\t\t\tBOUNDARY_UNDEFINED"},
		{str(str(str(seq(5), 2003, "first"), 2001, "CH"), 2003, "second"), "0\t\t\tCH\tBOUNDARY_UNDEFINED"},
		{str(str(seq(6), 6, "AAAA"), 6, "BBBB"), "0\t\t\t\tBOUNDARY_UNDEFINED"},
	}
	var record []byte
	for _, tt := range tests {
		record = protowire.AppendBytes(record, tt.msg)
	}
	if err := s.InsertProtobuf("twice", record, protoSchema(t)); err != nil {
		t.Fatal(err)
	}
	out, err := s.Run("SELECT sampling_rate, src_addr, src_as_name, src_country, in_if_boundary FROM twice ORDER BY sequence_num", "TabSeparatedRaw")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(rows) != len(tests) {
		t.Fatalf("twice has %d rows, want %d:\n%s", len(rows), len(tests), out)
	}
	for i, tt := range tests {
		if rows[i] != tt.want {
			t.Errorf("message %d (%x): ClickHouse read %q, want %q", i+1, tt.msg, rows[i], tt.want)
		}
	}
}
