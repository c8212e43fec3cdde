package clickhouse_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// One chDB process serves the whole test binary; each test gets its own
// database holding a fresh copy of the schema.
var shared struct {
	once sync.Once
	dir  string
	s    *chdb.Session
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.s != nil {
		shared.s.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func session(t testing.TB) *chdb.Session {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "chdb-schema-")
		if shared.err == nil {
			shared.s, shared.err = chdb.New(shared.dir)
		}
	})
	if shared.err != nil {
		if shared.s == nil && shared.dir != "" {
			os.RemoveAll(shared.dir)
		}
		chdbUnavailable(t, shared.err)
	}
	return shared.s
}

func chdbUnavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, chdb.ErrUnavailable) {
		testenv.Unavailable(t, "%v", err)
		return
	}
	t.Fatalf("start chDB: %v", err)
}

var (
	rootOnce sync.Once
	root     string
)

// repoRoot is the directory of go.mod, found by walking up.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, _ := os.Getwd()
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				root = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return
			}
			dir = parent
		}
	})
	if root == "" {
		t.Fatal("cannot find the repository root (no go.mod above the test directory)")
	}
	return root
}

func schemaDir(t testing.TB) string { return filepath.Join(repoRoot(t), "compose", "clickhouse") }

// protoSchema is the real wire contract, as ClickHouse's format_schema.
func protoSchema(t testing.TB) string {
	return filepath.Join(repoRoot(t), "pb", "flow.proto") + ":FlowMessage"
}

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// schemaDB creates a database for t, applies the schema files to it with
// the Kafka table swapped, and makes it the session's current database.
// TTL merges are stopped when keepOld is set, so that OPTIMIZE does not
// drop test data whose dates are past the retention.
func schemaDB(t testing.TB, keepOld bool) *chdb.Session {
	t.Helper()
	s := session(t)
	db := "t_" + strings.ToLower(nonIdent.ReplaceAllString(t.Name(), "_"))
	if err := s.Exec(fmt.Sprintf("DROP DATABASE IF EXISTS %[1]s; CREATE DATABASE %[1]s; USE %[1]s", db)); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySchema(schemaDir(t), true); err != nil {
		t.Fatal(err)
	}
	if keepOld {
		for _, table := range []string{"flows_raw", "flows_5m", "flows_1h", "flows_5m_enriched", "flows_errors"} {
			if err := s.Exec("SYSTEM STOP TTL MERGES " + db + "." + table); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { s.Exec("DROP DATABASE IF EXISTS " + db) })
	return s
}

// insert frames msgs as Kafka records do and inserts them into flows.
func insert(t testing.TB, s *chdb.Session, msgs []*pb.FlowMessage) {
	t.Helper()
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = pb.AppendDelimited(buf, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.InsertProtobuf("flows", buf, protoSchema(t)); err != nil {
		t.Fatal(err)
	}
}

// Test data: the mocker's flows at fixed times, so that results (and the
// outputs in docs/clickhouse.md) are reproducible. The span crosses midnight
// UTC, so rows land in two Date partitions.
const (
	mockSeed  = 1
	mockFlows = 20000
	mockSpan  = 3 * time.Hour
)

var mockStart = time.Date(2026, 1, 15, 22, 30, 0, 0, time.UTC)

func mockMessages(seed int64, n int, start time.Time, span time.Duration) []*pb.FlowMessage {
	g := mocker.NewGenerator(seed)
	msgs := make([]*pb.FlowMessage, n)
	for i := range msgs {
		msgs[i] = new(pb.FlowMessage)
		g.Next(msgs[i], start.Add(time.Duration(int64(span)*int64(i)/int64(n))))
	}
	return msgs
}

// The expected content of flows_raw, rollups and displays, computed in Go
// from the messages, independently of the SQL.

func scale(m *pb.FlowMessage) uint64 { return max(m.SamplingRate, 1) }

// showAddr is what docs/clickhouse.md's display expression must return.
func showAddr(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return "::"
	}
	return a.Unmap().String()
}

func received(m *pb.FlowMessage) time.Time { return time.Unix(0, int64(m.TimeReceivedNs)).UTC() }

func millis(ns uint64) string {
	return time.UnixMilli(int64(ns / 1e6)).UTC().Format("2006-01-02 15:04:05.000")
}

type rollupKey struct {
	Date, Timeslot string
	SrcAS, DstAS   uint32
}

type rollupRow struct {
	Date     string
	Timeslot string
	SrcAS    uint32
	DstAS    uint32
	EType    []uint16 `json:"ETypeMap.EType"`
	EBytes   []uint64 `json:"ETypeMap.Bytes"`
	EPackets []uint64 `json:"ETypeMap.Packets"`
	ECount   []uint64 `json:"ETypeMap.Count"`
	Bytes    uint64
	Packets  uint64
	Count    uint64
}

// rollup aggregates msgs per slot of width slot, as flows_5m and flows_1h
// must: scaled bytes and packets, flow count, the same per EType sorted.
func rollup(msgs []*pb.FlowMessage, slot time.Duration) []rollupRow {
	type sums struct{ bytes, packets, count uint64 }
	type acc struct {
		total  sums
		etypes map[uint16]*sums
	}
	accs := map[rollupKey]*acc{}
	for _, m := range msgs {
		recv := received(m).Truncate(time.Second)
		k := rollupKey{recv.Format("2006-01-02"), recv.Truncate(slot).Format("2006-01-02 15:04:05"), m.SrcAs, m.DstAs}
		a := accs[k]
		if a == nil {
			a = &acc{etypes: map[uint16]*sums{}}
			accs[k] = a
		}
		b, p := m.Bytes*scale(m), m.Packets*scale(m)
		a.total.bytes += b
		a.total.packets += p
		a.total.count++
		e := a.etypes[uint16(m.Etype)]
		if e == nil {
			e = &sums{}
			a.etypes[uint16(m.Etype)] = e
		}
		e.bytes += b
		e.packets += p
		e.count++
	}
	rows := make([]rollupRow, 0, len(accs))
	for k, a := range accs {
		r := rollupRow{Date: k.Date, Timeslot: k.Timeslot, SrcAS: k.SrcAS, DstAS: k.DstAS,
			Bytes: a.total.bytes, Packets: a.total.packets, Count: a.total.count}
		for et := range a.etypes {
			r.EType = append(r.EType, et)
		}
		sort.Slice(r.EType, func(i, j int) bool { return r.EType[i] < r.EType[j] })
		for _, et := range r.EType {
			e := a.etypes[et]
			r.EBytes = append(r.EBytes, e.bytes)
			r.EPackets = append(r.EPackets, e.packets)
			r.ECount = append(r.ECount, e.count)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Date != b.Date {
			return a.Date < b.Date
		}
		if a.Timeslot != b.Timeslot {
			return a.Timeslot < b.Timeslot
		}
		if a.SrcAS != b.SrcAS {
			return a.SrcAS < b.SrcAS
		}
		return a.DstAS < b.DstAS
	})
	return rows
}

// count is the number of rows of table.
func count(t testing.TB, s *chdb.Session, table string) uint64 {
	t.Helper()
	var rows []struct{ N uint64 }
	if err := s.QueryInto("SELECT count() AS N FROM "+table, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("count of %s returned %d rows", table, len(rows))
	}
	return rows[0].N
}
