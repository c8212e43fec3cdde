package clickhouse_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/netsampler/goflow2/v2/pb"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

var edgeTime = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)

func flowWith(src, dst string) *pb.FlowMessage {
	ns := uint64(edgeTime.UnixNano())
	return &pb.FlowMessage{
		Type: pb.FlowMessage_IPFIX, TimeReceivedNs: ns, TimeFlowStartNs: ns - 2e9, TimeFlowEndNs: ns - 1e9,
		SamplingRate: 10, SamplerAddress: netip.MustParseAddr("192.0.2.250").AsSlice(),
		SrcAddr: netip.MustParseAddr(src).AsSlice(), DstAddr: netip.MustParseAddr(dst).AsSlice(),
		Bytes: 100, Packets: 1, Etype: 0x800,
	}
}

// TestAddresses: both families read back as written through the display
// expression of docs/clickhouse.md; IPv4 is stored IPv4-mapped (the
// original stored 192.168.1.1 so that it showed as 101:a8c0::).
func TestAddresses(t *testing.T) {
	s := schemaDB(t, true)
	addrs := []string{"192.0.2.1", "10.0.0.1", "255.255.255.255", "0.0.0.0", "192.168.1.1", "2001:db8::1", "::1", "fe80::1:2:3:4"}
	var msgs []*pb.FlowMessage
	for i, a := range addrs {
		m := flowWith(a, addrs[len(addrs)-1-i])
		m.SequenceNum = uint32(i)
		msgs = append(msgs, m)
	}
	insert(t, s, msgs)
	var rows []struct{ Src, Dst, Stored, Sampler string }
	err := s.QueryInto(`SELECT replaceRegexpOne(IPv6NumToString(SrcAddr), '^::ffff:', '') AS Src,
		replaceRegexpOne(IPv6NumToString(DstAddr), '^::ffff:', '') AS Dst,
		IPv6NumToString(SrcAddr) AS Stored,
		replaceRegexpOne(IPv6NumToString(SamplerAddress), '^::ffff:', '') AS Sampler
		FROM flows_raw ORDER BY SequenceNum`, &rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(addrs) {
		t.Fatalf("flows_raw has %d rows, want %d", len(rows), len(addrs))
	}
	for i, r := range rows {
		want := addrs[i]
		stored := want
		if strings.Contains(want, ".") {
			stored = "::ffff:" + want
		}
		if r.Src != want || r.Dst != addrs[len(addrs)-1-i] || r.Stored != stored || r.Sampler != "192.0.2.250" {
			t.Errorf("address %s: got %+v, want Src=%s Dst=%s Stored=%s Sampler=192.0.2.250", want, r, want, addrs[len(addrs)-1-i], stored)
		}
	}
	// IPv4 filters and CIDR matches work on the mapped form.
	var n []struct{ A, B, C uint64 }
	if err := s.QueryInto(`SELECT countIf(SrcAddr = toIPv6('192.0.2.1')) AS A,
		countIf(isIPAddressInRange(IPv6NumToString(SrcAddr), '::ffff:10.0.0.0/104')) AS B,
		countIf(isIPAddressInRange(IPv6NumToString(SrcAddr), '2001:db8::/32')) AS C FROM flows_raw`, &n); err != nil {
		t.Fatal(err)
	}
	if len(n) != 1 || n[0] != (struct{ A, B, C uint64 }{1, 1, 1}) {
		t.Errorf("address filters = %+v, want 1 row of 1, 1, 1", n)
	}
}

// TestMalformedAddresses: an address of neither 0, 4 nor 16 bytes is
// refused as PostgreSQL refuses it (pgsink.ValidateFlow): the flow goes to
// flows_errors with the reason, and the view does not throw (that would
// stop the Kafka consumer). Empty addresses are kept and read as ::.
func TestMalformedAddresses(t *testing.T) {
	s := schemaDB(t, true)
	empty := flowWith("192.0.2.1", "192.0.2.2")
	empty.SrcAddr, empty.DstAddr, empty.SamplerAddress = nil, nil, nil
	empty.SequenceNum = 1
	bad := flowWith("192.0.2.1", "192.0.2.2")
	bad.SrcAddr, bad.DstAddr, bad.SamplerAddress = nil, []byte{1, 2, 3, 4, 5}, make([]byte, 17)
	bad.SequenceNum = 2
	badDst := flowWith("192.0.2.1", "192.0.2.2")
	badDst.DstAddr = []byte{1, 2, 3, 4, 5}
	badDst.SequenceNum = 3
	insert(t, s, []*pb.FlowMessage{empty, bad, badDst})
	var rows []struct {
		SequenceNum  uint32
		Src, Sampler string
	}
	if err := s.QueryInto("SELECT SequenceNum, IPv6NumToString(SrcAddr) AS Src, IPv6NumToString(SamplerAddress) AS Sampler FROM flows_raw", &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].SequenceNum != 1 || rows[0].Src != "::" || rows[0].Sampler != "::" {
		t.Errorf("flows_raw = %+v, want only flow 1 with Src :: and Sampler ::", rows)
	}
	var errs []struct{ Error string }
	if err := s.QueryInto("SELECT Error FROM flows_errors ORDER BY Error", &errs); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"invalid_field: dst_addr has 5 bytes, want 0, 4 or 16",
		"invalid_field: sampler_address has 17 bytes, want 0, 4 or 16",
	}
	if len(errs) != len(want) || errs[0].Error != want[0] || errs[1].Error != want[1] {
		t.Errorf("flows_errors = %+v, want %q", errs, want)
	}
}

// TestGoflow2Message: a message marshalled by goflow2's own generated
// package, framed as goflow2 -format=bin frames it, decodes through the
// schema with every field the tables keep.
func TestGoflow2Message(t *testing.T) {
	s := schemaDB(t, true)
	ns := uint64(edgeTime.UnixNano()) + 123456789
	m := &flowpb.FlowMessage{
		Type: flowpb.FlowMessage_NETFLOW_V9, TimeReceivedNs: ns, SequenceNum: 4242, SamplingRate: 512,
		SamplerAddress:  netip.MustParseAddr("198.51.100.7").AsSlice(),
		TimeFlowStartNs: ns - 3_500_000_000, TimeFlowEndNs: ns - 1_250_000_000,
		Bytes: 123456, Packets: 89,
		SrcAddr: netip.MustParseAddr("2001:db8:1::10").AsSlice(), DstAddr: netip.MustParseAddr("2001:db8:2::20").AsSlice(),
		Etype: 0x86dd, Proto: 6, SrcPort: 443, DstPort: 51000, InIf: 3, OutIf: 7, TcpFlags: 0x1b,
		SrcAs: 65001, DstAs: 64500,
		// Fields the schema skips must not disturb decoding.
		SrcMac: 0x0200deadbeef, IpTtl: 64, AsPath: []uint32{65001, 64500}, BgpCommunities: []uint32{1, 2},
	}
	var buf bytes.Buffer
	if _, err := protodelim.MarshalTo(&buf, m); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertProtobuf("flows", buf.Bytes(), protoSchema(t)); err != nil {
		t.Fatal(err)
	}
	var rows []rawRow
	if err := s.QueryInto(rawQuery, &rows); err != nil {
		t.Fatal(err)
	}
	want := rawRow{
		Date: "2026-01-15", TimeReceived: "2026-01-15 12:00:00",
		TimeFlowStart: "2026-01-15 11:59:56.623", TimeFlowEnd: "2026-01-15 11:59:58.873",
		Type: "NETFLOW_V9", SequenceNum: 4242, SamplingRate: 512,
		Sampler: "198.51.100.7", Src: "2001:db8:1::10", Dst: "2001:db8:2::20",
		SrcAS: 65001, DstAS: 64500, EType: 0x86dd, Proto: 6, SrcPort: 443, DstPort: 51000,
		InIf: 3, OutIf: 7, TCPFlags: 0x1b, Bytes: 123456, Packets: 89,
	}
	if len(rows) != 1 || rows[0] != want {
		t.Errorf("flows_raw = %+v\nwant one row %+v", rows, want)
	}
}

// TestErrorStream: rows the Kafka engine marks with _error (stream mode)
// go to flows_errors and not to flows_raw. chDB never consumes Kafka, so
// the test inserts what the engine would emit for a broken record.
func TestErrorStream(t *testing.T) {
	s := schemaDB(t, true)
	err := s.Exec(`INSERT INTO flows (_topic, _partition, _offset, _error, _raw_message) VALUES
		('flows', 3, 42, 'Cannot parse input: expected a varint', 'garbage'),
		('flows', 5, 7, 'Protobuf messages are corrupted', '\x01\x02')`)
	if err != nil {
		t.Fatal(err)
	}
	insert(t, s, []*pb.FlowMessage{flowWith("192.0.2.1", "192.0.2.2")})
	if n := count(t, s, "flows_raw"); n != 1 {
		t.Errorf("flows_raw has %d rows, want only the good flow", n)
	}
	var rows []struct {
		Topic             string
		Partition, Offset uint64
		Error, RawMessage string
	}
	if err := s.QueryInto("SELECT Topic, Partition, Offset, Error, RawMessage FROM flows_errors ORDER BY Partition", &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Offset != 42 || rows[0].RawMessage != "garbage" || rows[1].Partition != 5 || rows[1].Error != "Protobuf messages are corrupted" {
		t.Errorf("flows_errors = %+v", rows)
	}
}

// TestBrokenRecordsRejected: the records the error stream exists for do not
// decode with the schema. (On a server the Kafka engine turns this error
// into an _error row; chDB can only show that decoding fails.)
func TestBrokenRecordsRejected(t *testing.T) {
	s := schemaDB(t, true)
	good, err := pb.AppendDelimited(nil, flowWith("192.0.2.1", "192.0.2.2"))
	if err != nil {
		t.Fatal(err)
	}
	unknownType := flowWith("192.0.2.1", "192.0.2.2")
	unknownType.Type = 9
	unknown, err := pb.AppendDelimited(nil, unknownType)
	if err != nil {
		t.Fatal(err)
	}
	// A boundary the proto does not name (the enricher writes 0-2 only).
	unknownBoundary := pb.AppendEnrichedFrame(nil, flowWith("192.0.2.1", "192.0.2.2").AppendWire(nil),
		&pb.Enrichment{SrcCountry: "CH", InIfBoundary: 3})
	for name, record := range map[string][]byte{
		"truncated":          good[:len(good)-3],
		"length beyond data": append([]byte{0xff, 0x01}, good[1:]...),
		"not protobuf":       []byte("{\"json\": true}\n"),
		"unknown flow type":  unknown,
		"unknown boundary":   unknownBoundary,
	} {
		if err := s.InsertProtobuf("flows", record, protoSchema(t)); err == nil {
			t.Errorf("%s record: decoded without error", name)
		}
	}
	if n := count(t, s, "flows_raw"); n != 0 {
		t.Errorf("flows_raw has %d rows after broken records, want 0", n)
	}
}

// TestRetention: the TTLs drop what is past retention (7 days raw, 30 days
// 5-minute, 365 days hourly) when parts merge.
func TestRetention(t *testing.T) {
	s := schemaDB(t, false) // TTL merges on
	now := time.Now().UTC()
	var msgs []*pb.FlowMessage
	for i, age := range []time.Duration{0, 10 * 24 * time.Hour, 100 * 24 * time.Hour, 400 * 24 * time.Hour} {
		m := flowWith("192.0.2.1", "192.0.2.2")
		m.SequenceNum = uint32(i)
		m.TimeReceivedNs = uint64(now.Add(-age).UnixNano())
		msgs = append(msgs, m)
	}
	insert(t, s, msgs)
	for table, want := range map[string]uint64{"flows_raw": 1, "flows_5m": 2, "flows_1h": 3} {
		if err := s.Exec("OPTIMIZE TABLE " + table + " FINAL"); err != nil {
			t.Fatal(err)
		}
		if n := count(t, s, table); n != want {
			t.Errorf("%s keeps %d of 4 rows aged 0, 10, 100, 400 days, want %d", table, n, want)
		}
	}
}
