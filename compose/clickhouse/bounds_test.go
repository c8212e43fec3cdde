package clickhouse_test

import (
	"encoding/xml"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

const (
	max48 = uint64(1) << 48 // bytes, packets (CONTRACTS §1)
	max50 = uint64(1) << 50 // bytes or packets times max(sampling_rate, 1)
)

// TestFlowBounds: the views accept a flow at each bound and send it to
// flows_errors one past the bound, with the reason; nothing wraps. Each case
// is one flow in one block, so the test also shows that a rejected flow
// does not take the block's good flows with it.
func TestFlowBounds(t *testing.T) {
	s := schemaDB(t, true)
	now := time.Now().UTC()
	y2000 := uint64(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	cases := []struct {
		name string
		set  func(m *pb.FlowMessage)
		err  string // "" when accepted
	}{
		{"plain", func(m *pb.FlowMessage) {}, ""},
		{"time_received 0", func(m *pb.FlowMessage) { m.TimeReceivedNs = 0 }, "invalid_field: time_received_ns is not set"},
		{"time_received 2000-01-01", func(m *pb.FlowMessage) { m.TimeReceivedNs = y2000 }, ""},
		{"time_received 1 ns before 2000", func(m *pb.FlowMessage) { m.TimeReceivedNs = y2000 - 1 },
			fmt.Sprintf("too_old: time_received_ns %d is before 2000-01-01", y2000-1)},
		// The future bound moves with the clock: 5 minutes ahead is inside
		// the 10-minute skew, 15 minutes is not.
		{"time_received now+5m", func(m *pb.FlowMessage) { m.TimeReceivedNs = uint64(now.Add(5 * time.Minute).UnixNano()) }, ""},
		{"time_received now+15m", func(m *pb.FlowMessage) { m.TimeReceivedNs = uint64(now.Add(15 * time.Minute).UnixNano()) },
			fmt.Sprintf("too_new: time_received_ns %d is more than 10 minutes ahead of now", uint64(now.Add(15*time.Minute).UnixNano()))},
		{"time_flow_start max", func(m *pb.FlowMessage) { m.TimeFlowStartNs = math.MaxInt64 }, ""},
		{"time_flow_start over", func(m *pb.FlowMessage) { m.TimeFlowStartNs = math.MaxInt64 + 1 },
			"out_of_range: time_flow_start_ns 9223372036854775808 exceeds 9223372036854775807"},
		{"time_flow_end over", func(m *pb.FlowMessage) { m.TimeFlowEndNs = math.MaxUint64 },
			"out_of_range: time_flow_end_ns 18446744073709551615 exceeds 9223372036854775807"},
		{"sampling_rate max", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = math.MaxUint32, 1, 1 }, ""},
		{"sampling_rate over", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = math.MaxUint32+1, 1, 1 },
			"out_of_range: sampling_rate 4294967296 exceeds 4294967295"},
		{"bytes 2^48 unsampled", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes = 0, max48 }, ""},
		{"bytes 2^48+1", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes = 0, max48+1 },
			"out_of_range: bytes 281474976710657 exceeds 281474976710656"},
		{"packets 2^48+1", func(m *pb.FlowMessage) { m.SamplingRate, m.Packets = 1, max48+1 },
			"out_of_range: packets 281474976710657 exceeds 281474976710656"},
		{"scaled bytes 2^50", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = 4, max48, max48 }, ""},
		{"scaled bytes over", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = 5, max48, 1 },
			"out_of_range: bytes * sampling_rate 1407374883553280 exceeds 1125899906842624"},
		// 2^48 * (2^32-1) overflows UInt64: the check must not wrap either.
		{"scaled bytes over UInt64", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = math.MaxUint32, max48, 1 },
			"out_of_range: bytes * sampling_rate 1208925819333154197995520 exceeds 1125899906842624"},
		{"scaled packets over", func(m *pb.FlowMessage) { m.SamplingRate, m.Bytes, m.Packets = 1<<20, 1, 1<<30+1 },
			"out_of_range: packets * sampling_rate 1125899907891200 exceeds 1125899906842624"},
		{"proto 255", func(m *pb.FlowMessage) { m.Proto = 255 }, ""},
		{"proto 256", func(m *pb.FlowMessage) { m.Proto = 256 }, "out_of_range: proto 256 exceeds 255"},
		{"etype 65535", func(m *pb.FlowMessage) { m.Etype = 65535 }, ""},
		{"etype 65536", func(m *pb.FlowMessage) { m.Etype = 65536 }, "out_of_range: etype 65536 exceeds 65535"},
		{"src_port 65535", func(m *pb.FlowMessage) { m.SrcPort = 65535 }, ""},
		{"src_port 65536", func(m *pb.FlowMessage) { m.SrcPort = 65536 }, "out_of_range: src_port 65536 exceeds 65535"},
		{"dst_port 65535", func(m *pb.FlowMessage) { m.DstPort = 65535 }, ""},
		{"dst_port 65537", func(m *pb.FlowMessage) { m.DstPort = 65537 }, "out_of_range: dst_port 65537 exceeds 65535"},
		{"tcp_flags 65535", func(m *pb.FlowMessage) { m.TcpFlags = 65535 }, ""},
		{"tcp_flags 1<<31", func(m *pb.FlowMessage) { m.TcpFlags = 1 << 31 }, "out_of_range: tcp_flags 2147483648 exceeds 65535"},
	}
	msgs := make([]*pb.FlowMessage, len(cases))
	wantErrs := map[string]string{} // offset -> error
	var wantRaw []rawRow
	for i, c := range cases {
		m := flowWith("192.0.2.1", "192.0.2.2")
		m.SequenceNum = uint32(i)
		c.set(m)
		msgs[i] = m
		if c.err == "" {
			wantRaw = append(wantRaw, expectRaw(m))
		} else {
			wantErrs[fmt.Sprint(i)] = c.err
		}
	}
	// One Kafka record per flow, at offsets 0..n-1 of partition 2.
	for i, m := range msgs {
		insertAt(t, s, 2, int64(i), []*pb.FlowMessage{m})
	}

	var raw []rawRow
	if err := s.QueryInto(rawQuery+" ORDER BY SequenceNum", &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != len(wantRaw) {
		t.Errorf("flows_raw has %d rows, want the %d flows at the bounds", len(raw), len(wantRaw))
	}
	for i := 0; i < min(len(raw), len(wantRaw)); i++ {
		if raw[i] != wantRaw[i] {
			t.Errorf("flows_raw row %d (%s)\n got %+v\nwant %+v", i, cases[wantRaw[i].SequenceNum].name, raw[i], wantRaw[i])
		}
	}

	var errs []struct {
		Topic, Error, RawMessage string
		Partition, Offset        uint64
	}
	if err := s.QueryInto("SELECT Topic, Partition, Offset, Error, RawMessage FROM flows_errors ORDER BY Offset", &errs); err != nil {
		t.Fatal(err)
	}
	if len(errs) != len(wantErrs) {
		t.Errorf("flows_errors has %d rows, want %d", len(errs), len(wantErrs))
	}
	for _, e := range errs {
		off := fmt.Sprint(e.Offset)
		want, ok := wantErrs[off]
		if !ok {
			t.Errorf("flows_errors holds offset %s (%s), which is valid: %q", off, cases[e.Offset].name, e.Error)
			continue
		}
		delete(wantErrs, off)
		if e.Error != want || e.Topic != "flows" || e.Partition != 2 {
			t.Errorf("%s: flows_errors row = %s/%d/%d %q, want flows/2/%s %q", cases[e.Offset].name, e.Topic, e.Partition, e.Offset, e.Error, off, want)
		}
		// The rejected flow is readable without Kafka.
		if wantSeq := fmt.Sprintf(`"sequence_num":%d,`, e.Offset); !strings.Contains(e.RawMessage, wantSeq) {
			t.Errorf("%s: RawMessage %s lacks %s", cases[e.Offset].name, e.RawMessage, wantSeq)
		}
	}
	for off, want := range wantErrs {
		t.Errorf("offset %s: not in flows_errors, want %q", off, want)
	}

	// The rollups hold exactly the accepted flows, scaled.
	var wantBytes, wantPackets big.Int
	for _, r := range wantRaw {
		sc := new(big.Int).SetUint64(max(r.SamplingRate, 1))
		wantBytes.Add(&wantBytes, new(big.Int).Mul(new(big.Int).SetUint64(r.Bytes), sc))
		wantPackets.Add(&wantPackets, new(big.Int).Mul(new(big.Int).SetUint64(r.Packets), sc))
	}
	for _, table := range []string{"flows_5m", "flows_1h"} {
		checkSums(t, s, table, wantBytes.String(), wantPackets.String(), uint64(len(wantRaw)))
	}
}

// checkSums compares a rollup's totals, as decimal strings (UInt128), and
// the per-EType sums, which must add up to the same.
func checkSums(t *testing.T, s interface {
	QueryInto(string, any) error
}, table, bytes, packets string, flows uint64) {
	t.Helper()
	// Aliases differ from the columns, which they would shadow.
	var got []struct{ SBytes, SPackets, EBytes, EPackets, BytesType string }
	q := fmt.Sprintf(`SELECT toString(sum(Bytes)) AS SBytes, toString(sum(Packets)) AS SPackets,
		toString(sum(arraySum(ETypeMap.Bytes))) AS EBytes, toString(sum(arraySum(ETypeMap.Packets))) AS EPackets,
		toTypeName(sum(Bytes)) AS BytesType FROM %s`, table)
	if err := s.QueryInto(q, &got); err != nil {
		t.Fatal(err)
	}
	var n []struct{ Count uint64 }
	if err := s.QueryInto("SELECT sum(Count) AS Count FROM "+table, &n); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(n) != 1 {
		t.Fatalf("%s: sums returned %d and %d rows", table, len(got), len(n))
	}
	g := got[0]
	if g.SBytes != bytes || g.SPackets != packets || g.EBytes != bytes || g.EPackets != packets || n[0].Count != flows {
		t.Errorf("%s: bytes %s packets %s (per EType %s, %s), %d flows; want %s, %s, %d flows",
			table, g.SBytes, g.SPackets, g.EBytes, g.EPackets, n[0].Count, bytes, packets, flows)
	}
	if g.BytesType != "UInt128" {
		t.Errorf("%s: sum(Bytes) is %s, want UInt128", table, g.BytesType)
	}
}

// TestRollupMaxFlows: 20,000 flows of the largest accepted size in one slot
// and AS pair sum to 20000 * 2^50 scaled bytes and packets, past UInt64,
// exactly, before and after parts merge.
func TestRollupMaxFlows(t *testing.T) {
	s := schemaDB(t, true)
	const n = 20000
	msgs := make([]*pb.FlowMessage, n)
	for i := range msgs {
		m := flowWith("192.0.2.1", "192.0.2.2")
		m.SequenceNum = uint32(i)
		m.Bytes, m.Packets, m.SamplingRate = max48, max48, 4 // each scaled to 2^50
		m.SrcAs, m.DstAs = 64500, 64501
		msgs[i] = m
	}
	for i := 0; i < 4; i++ { // several parts
		insert(t, s, msgs[i*n/4:(i+1)*n/4])
	}
	if got := count(t, s, "flows_raw"); got != n {
		t.Fatalf("flows_raw has %d rows, want %d: max-size flows must be accepted", got, n)
	}
	want := new(big.Int).Mul(big.NewInt(n), new(big.Int).SetUint64(max50))
	if want.IsUint64() {
		t.Fatal("test data too small: the sum must not fit in UInt64")
	}
	for _, table := range []string{"flows_5m", "flows_1h"} {
		checkSums(t, s, table, want.String(), want.String(), n)
		if err := s.Exec("OPTIMIZE TABLE " + table + " FINAL"); err != nil {
			t.Fatal(err)
		}
		if rows := count(t, s, table); rows != 1 {
			t.Errorf("%s has %d rows after OPTIMIZE FINAL, want 1", table, rows)
		}
		checkSums(t, s, table, want.String(), want.String(), n)
	}
}

// duplicatesQuery is the README's query for Kafka records stored more than
// once (ClickHouse's path is at-least-once).
const duplicatesQuery = `SELECT Topic, Partition, Offset,
    count() AS Rows,
    uniqExact(SamplerAddress, SequenceNum, TimeFlowStart, TimeFlowEnd, SrcAddr, DstAddr, SrcPort, DstPort, Proto, Bytes, Packets) AS Flows
FROM flows_raw
GROUP BY Topic, Partition, Offset
HAVING Rows > Flows
ORDER BY Topic, Partition, Offset`

// TestDuplicateRecords: a block consumed twice (a crash between the insert
// and the offset commit) is found by the README's duplicates query, and a
// record that carries several flows is not mistaken for a duplicate.
func TestDuplicateRecords(t *testing.T) {
	s := schemaDB(t, true)
	if !strings.Contains(readmeText(t), duplicatesQuery) {
		t.Fatalf("the README's ClickHouse section does not show the duplicates query:\n%s", duplicatesQuery)
	}
	// Ten records of two flows each, at offsets 100..109 of partition 1.
	records := make([][]*pb.FlowMessage, 10)
	for i := range records {
		for j := 0; j < 2; j++ {
			m := flowWith("192.0.2.1", "192.0.2.2")
			m.SequenceNum = uint32(2*i + j)
			records[i] = append(records[i], m)
		}
		insertAt(t, s, 1, int64(100+i), records[i])
	}
	// Another topic's record at the same partition and offset is no duplicate.
	insertAtTopic(t, s, "flows-other", 1, 105, records[0])
	// The block of offsets 106..109 again.
	for i := 6; i < 10; i++ {
		insertAt(t, s, 1, int64(100+i), records[i])
	}
	if n := count(t, s, "flows_raw"); n != 30 {
		t.Fatalf("flows_raw has %d rows, want 20 + 2 + 8", n)
	}
	var dups []struct {
		Topic                          string
		Partition, Offset, Rows, Flows uint64
	}
	if err := s.QueryInto(duplicatesQuery, &dups); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dups {
		got = append(got, fmt.Sprintf("%s/%d/%d:%d>%d", d.Topic, d.Partition, d.Offset, d.Rows, d.Flows))
	}
	sort.Strings(got)
	want := []string{"flows/1/106:4>2", "flows/1/107:4>2", "flows/1/108:4>2", "flows/1/109:4>2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("duplicates query = %v, want %v", got, want)
	}
}

// insertAt inserts msgs as one Kafka record of topic "flows" at partition
// and offset, as the Kafka engine would deliver it.
func insertAt(t testing.TB, s interface{ Exec(string) error }, partition int32, offset int64, msgs []*pb.FlowMessage) {
	t.Helper()
	insertAtTopic(t, s, "flows", partition, offset, msgs)
}

func insertAtTopic(t testing.TB, s interface{ Exec(string) error }, topic string, partition int32, offset int64, msgs []*pb.FlowMessage) {
	t.Helper()
	var rows []string
	for _, m := range msgs {
		rows = append(rows, fmt.Sprintf("(%d, %d, %d, %d, unhex('%x'), %d, %d, %d, %d, unhex('%x'), unhex('%x'), %d, %d, %d, %d, %d, %d, %d, %d, %d, '%s', %d, %d)",
			m.Type, m.TimeReceivedNs, m.SequenceNum, m.SamplingRate, m.SamplerAddress, m.TimeFlowStartNs, m.TimeFlowEndNs,
			m.Bytes, m.Packets, m.SrcAddr, m.DstAddr, m.Etype, m.Proto, m.SrcPort, m.DstPort, m.InIf, m.OutIf, m.TcpFlags,
			m.SrcAs, m.DstAs, topic, partition, offset))
	}
	err := s.Exec(`INSERT INTO flows (type, time_received_ns, sequence_num, sampling_rate, sampler_address,
		time_flow_start_ns, time_flow_end_ns, bytes, packets, src_addr, dst_addr, etype, proto, src_port, dst_port,
		in_if, out_if, tcp_flags, src_as, dst_as, _topic, _partition, _offset) VALUES ` + strings.Join(rows, ", "))
	if err != nil {
		t.Fatal(err)
	}
}

// TestManyDays: one Kafka block whose flows span 500 days (a replay of old
// data, a router clock far off) is stored, with the default profile of
// compose/clickhouse-users.xml, which the Kafka engine's inserts run with.
// Without it ClickHouse refuses a block touching more than 100 partitions,
// and the Kafka engine would retry that block forever.
func TestManyDays(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "compose", "clickhouse-users.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var f usersFile
	if err := xml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if f.DefaultThrow != "0" {
		t.Fatalf("profile default: throw_on_max_partitions_per_insert_block = %q, want 0", f.DefaultThrow)
	}
	s := schemaDB(t, true)
	const days = 500
	first := time.Date(2000, 1, 1, 12, 0, 0, 0, time.UTC)
	msgs := make([]*pb.FlowMessage, days)
	for i := range msgs {
		m := flowWith("192.0.2.1", "192.0.2.2")
		m.SequenceNum = uint32(i)
		m.TimeReceivedNs = uint64(first.AddDate(0, 0, i).UnixNano())
		msgs[i] = m
	}
	// The server's default (100 partitions per block, throw) refuses it.
	if err := s.Exec("SET throw_on_max_partitions_per_insert_block = 1"); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, m := range msgs {
		if buf, err = pb.AppendDelimited(buf, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.InsertProtobuf("flows", buf, protoSchema(t)); err == nil || !strings.Contains(err.Error(), "TOO_MANY_PARTS") {
		t.Errorf("a block over %d days with the server's default settings: %v, want TOO_MANY_PARTS", days, err)
	}
	// The session is shared: restore what the other tests run with.
	if err := s.Exec("SET throw_on_max_partitions_per_insert_block = " + f.DefaultThrow); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Exec("SET throw_on_max_partitions_per_insert_block = 1") })
	if err := s.InsertProtobuf("flows", buf, protoSchema(t)); err != nil {
		t.Fatalf("a block over %d days with the compose default profile: %v", days, err)
	}
	var got []struct{ Raw, Days, M5, H1, Errors uint64 }
	if err := s.QueryInto(`SELECT (SELECT count() FROM flows_raw) AS Raw, (SELECT uniqExact(Date) FROM flows_raw) AS Days,
		(SELECT sum(Count) FROM flows_5m) AS M5, (SELECT sum(Count) FROM flows_1h) AS H1,
		(SELECT count() FROM flows_errors) AS Errors`, &got); err != nil {
		t.Fatal(err)
	}
	want := struct{ Raw, Days, M5, H1, Errors uint64 }{days, days, days, days, 0}
	if len(got) != 1 || got[0] != want {
		t.Errorf("after a %d-day block: %+v, want %+v", days, got, want)
	}
}
