package clickhouse_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// kafkaStatement is the CREATE TABLE … ENGINE = Kafka statement of the
// schema files, as written.
func kafkaStatement(t *testing.T, table string) string {
	t.Helper()
	files, err := chdb.SchemaFiles(schemaDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range files {
		script, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stmts, err := chdb.SplitStatements(string(script))
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		for _, stmt := range stmts {
			if _, swapped := chdb.SwapKafkaEngine(stmt); swapped && strings.Fields(stmt)[5] == table {
				found = append(found, stmt)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %d ENGINE = Kafka statements for %s in %s, want 1", len(found), table, schemaDir(t))
	}
	return found[0]
}

// TestKafkaTableSettings checks the unchanged Kafka statement parses on the
// real engine and carries the settings the pipeline depends on.
func TestKafkaTableSettings(t *testing.T) {
	stmt := kafkaStatement(t, "flows")
	s := session(t)
	out, err := s.Run("SELECT formatQuery("+chdb.Quote(stmt)+")", "TSVRaw")
	if err != nil {
		t.Fatalf("the Kafka table statement does not parse: %v", err)
	}
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS flows",
		"ENGINE = Kafka",
		"kafka_broker_list = 'kafka:9092'",
		"kafka_topic_list = 'flows-enriched'",
		"kafka_group_name = 'clickhouse'",
		"kafka_format = 'Protobuf'",
		"kafka_schema = 'flow.proto:FlowMessage'",
		"kafka_handle_error_mode = 'stream'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Kafka table lacks %q:\n%s", want, out)
		}
	}
	// kafka_schema names the message of pb/flow.proto.
	if name := (&pb.FlowMessage{}).ProtoReflect().Descriptor().Name(); name != "FlowMessage" {
		t.Errorf("pb message is %s, kafka_schema says FlowMessage", name)
	}
}

// clickhouseType is the column type that reads a proto field without loss.
func clickhouseType(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.Uint64Kind:
		return "UInt64"
	case protoreflect.Uint32Kind:
		return "UInt32"
	case protoreflect.BytesKind, protoreflect.StringKind:
		return "String"
	case protoreflect.BoolKind:
		return "Bool"
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		parts := make([]string, vals.Len())
		for i := range parts {
			parts[i] = fmt.Sprintf("'%s' = %d", vals.Get(i).Name(), vals.Get(i).Number())
		}
		return "Enum8(" + strings.Join(parts, ", ") + ")"
	}
	return "no mapping for " + fd.Kind().String()
}

// TestKafkaColumnsMatchProto: every column of the Kafka table is a field of
// pb/flow.proto, with the type that reads it without loss. ClickHouse
// matches by name, so a renamed field would silently read as zero.
func TestKafkaColumnsMatchProto(t *testing.T) {
	s := schemaDB(t, false)
	var cols []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := s.QueryInto("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'flows' AND NOT startsWith(name, '_') ORDER BY position", &cols); err != nil {
		t.Fatal(err)
	}
	if len(cols) < 20 {
		t.Fatalf("flows has %d proto columns, want the 20 the views read: %+v", len(cols), cols)
	}
	fields := (&pb.FlowMessage{}).ProtoReflect().Descriptor().Fields()
	for _, c := range cols {
		fd := fields.ByName(protoreflect.Name(c.Name))
		if fd == nil {
			t.Errorf("column %s of flows is not a field of pb/flow.proto", c.Name)
			continue
		}
		if want := clickhouseType(fd); c.Type != want {
			t.Errorf("column %s is %s; proto field #%d (%v) needs %s", c.Name, c.Type, fd.Number(), fd.Kind(), want)
		}
	}
}

type rawRow struct {
	Date, TimeReceived, TimeFlowStart, TimeFlowEnd, Type string
	SequenceNum                                          uint32
	SamplingRate                                         uint64
	Sampler, Src, Dst                                    string
	SrcAS, DstAS                                         uint32
	EType                                                uint16
	Proto                                                uint8
	SrcPort, DstPort                                     uint16
	InIf, OutIf                                          uint32
	TCPFlags                                             uint16
	Bytes, Packets                                       uint64
}

const rawQuery = `SELECT Date, TimeReceived, TimeFlowStart, TimeFlowEnd, Type, SequenceNum, SamplingRate,
	replaceRegexpOne(IPv6NumToString(SamplerAddress), '^::ffff:', '') AS Sampler,
	replaceRegexpOne(IPv6NumToString(SrcAddr), '^::ffff:', '') AS Src,
	replaceRegexpOne(IPv6NumToString(DstAddr), '^::ffff:', '') AS Dst,
	SrcAS, DstAS, EType, Proto, SrcPort, DstPort, InIf, OutIf, TCPFlags, Bytes, Packets
FROM flows_raw`

func expectRaw(m *pb.FlowMessage) rawRow {
	recv := received(m)
	return rawRow{
		Date: recv.Format("2006-01-02"), TimeReceived: recv.Format("2006-01-02 15:04:05"),
		TimeFlowStart: millis(m.TimeFlowStartNs), TimeFlowEnd: millis(m.TimeFlowEndNs),
		Type: m.Type.String(), SequenceNum: m.SequenceNum, SamplingRate: m.SamplingRate,
		Sampler: showAddr(m.SamplerAddress), Src: showAddr(m.SrcAddr), Dst: showAddr(m.DstAddr),
		SrcAS: m.SrcAs, DstAS: m.DstAs, EType: uint16(m.Etype), Proto: uint8(m.Proto),
		SrcPort: uint16(m.SrcPort), DstPort: uint16(m.DstPort), InIf: m.InIf, OutIf: m.OutIf,
		TCPFlags: uint16(m.TcpFlags), Bytes: m.Bytes, Packets: m.Packets,
	}
}

// TestMockerFlows feeds the mocker's framed output through the schema and
// checks every table against what was produced, computed in Go.
func TestMockerFlows(t *testing.T) {
	s := schemaDB(t, true)
	msgs := mockMessages(mockSeed, mockFlows, mockStart, mockSpan)
	// Several inserts make several parts, which OPTIMIZE FINAL must merge.
	const batches = 4
	for i := 0; i < batches; i++ {
		insert(t, s, msgs[i*len(msgs)/batches:(i+1)*len(msgs)/batches])
	}

	var wantBytes, wantPackets, wantScaled uint64
	for _, m := range msgs {
		wantBytes += m.Bytes
		wantPackets += m.Packets
		wantScaled += m.Bytes * scale(m)
	}
	var totals []struct{ N, SumBytes, SumPackets, Scaled uint64 }
	if err := s.QueryInto("SELECT count() AS N, sum(Bytes) AS SumBytes, sum(Packets) AS SumPackets, sum(Bytes * greatest(SamplingRate, 1)) AS Scaled FROM flows_raw", &totals); err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].N != mockFlows || totals[0].SumBytes != wantBytes || totals[0].SumPackets != wantPackets || totals[0].Scaled != wantScaled {
		t.Fatalf("flows_raw totals = %+v, want N=%d Bytes=%d Packets=%d Scaled=%d", totals, mockFlows, wantBytes, wantPackets, wantScaled)
	}

	t.Run("raw rows", func(t *testing.T) {
		var rows []rawRow
		if err := s.QueryInto(rawQuery+" ORDER BY Sampler, SequenceNum", &rows); err != nil {
			t.Fatal(err)
		}
		got := make(map[[2]any]rawRow, len(rows))
		for _, r := range rows {
			got[[2]any{r.Sampler, r.SequenceNum}] = r
		}
		if len(got) != len(msgs) {
			t.Fatalf("flows_raw has %d distinct (sampler, sequence) rows, want %d", len(got), len(msgs))
		}
		bad := 0
		for _, m := range msgs {
			want := expectRaw(m)
			if r := got[[2]any{want.Sampler, want.SequenceNum}]; r != want && bad < 5 {
				bad++
				t.Errorf("flows_raw row\n got %+v\nwant %+v", r, want)
			}
		}
	})

	for _, tc := range []struct {
		table string
		slot  time.Duration
	}{{"flows_5m", 5 * time.Minute}, {"flows_1h", time.Hour}} {
		t.Run(tc.table, func(t *testing.T) {
			if err := s.Exec("OPTIMIZE TABLE " + tc.table + " FINAL"); err != nil {
				t.Fatal(err)
			}
			var got []rollupRow
			if err := s.QueryInto("SELECT * FROM "+tc.table+" ORDER BY Date, Timeslot, SrcAS, DstAS", &got); err != nil {
				t.Fatal(err)
			}
			want := rollup(msgs, tc.slot)
			checkRollupRows(t, tc.table, got, want)
			var n, count, scaled uint64
			for _, r := range want {
				n++
				count += r.Count
				scaled += r.Bytes
			}
			if count != mockFlows || scaled != wantScaled {
				t.Errorf("Go rollup: %d flows, %d bytes; want %d, %d", count, scaled, mockFlows, wantScaled)
			}
			if !t.Failed() {
				t.Logf("%s: %d rows, equal to the Go aggregates", tc.table, n)
			}
		})
	}

	if n := count(t, s, "flows_errors"); n != 0 {
		t.Errorf("flows_errors has %d rows, want 0", n)
	}
}

// checkRollupRows compares a rollup's rows, ordered by key, with rollup()'s.
func checkRollupRows(t *testing.T, table string, got, want []rollupRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s has %d rows, want %d", table, len(got), len(want))
	}
	bad := 0
	for i := 0; i < min(len(got), len(want)) && bad < 5; i++ {
		if !reflect.DeepEqual(got[i], want[i]) {
			bad++
			t.Errorf("%s row %d\n got %+v\nwant %+v", table, i, got[i], want[i])
		}
	}
}
