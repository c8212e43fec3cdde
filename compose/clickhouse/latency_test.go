package clickhouse_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// latencyQuery is the latency query of docs/clickhouse.md: the ```sql
// block that reads InsertTime.
func latencyQuery(t *testing.T) string {
	t.Helper()
	lines := strings.Split(readmeText(t), "\n")
	var found []string
	for _, b := range readmeBlocks(t, lines, 0, len(lines)) {
		if strings.Contains(b.sql, "InsertTime") {
			found = append(found, b.sql)
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/clickhouse.md has %d queries reading InsertTime, want the one latency query", len(found))
	}
	return found[0]
}

// TestInsertTime checks that flows_raw_mv stamps each row with the time
// of its insert (not a constant, not the receive time), and that the
// latency query of docs/clickhouse.md reports, for flows received about
// 30 s before they are inserted, exactly their count and quantiles within
// what the clock allows.
func TestInsertTime(t *testing.T) {
	s := schemaDB(t, false)
	const n = 1000
	// Received within one second, 30 s ago; spread over a second so that
	// the whole-second TimeReceived differs between flows.
	recv := time.Now().Add(-30 * time.Second)
	first := mockMessages(11, n, recv, time.Second)
	before1 := time.Now()
	insert(t, s, first)
	after1 := time.Now()

	// A second insert, later: only its rows carry the later InsertTime.
	time.Sleep(20 * time.Millisecond)
	second := mockMessages(12, n, time.Now().Add(-10*time.Second), time.Second)
	before2 := time.Now()
	insert(t, s, second)
	after2 := time.Now()

	// Milliseconds, as InsertTime holds them; before rounds down, after up.
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	var rows []struct{ N, Window1, Window2, Late uint64 }
	q := fmt.Sprintf(`SELECT count() AS N,
    countIf(toUnixTimestamp64Milli(InsertTime) BETWEEN %d AND %d) AS Window1,
    countIf(toUnixTimestamp64Milli(InsertTime) BETWEEN %d AND %d) AS Window2,
    countIf(toUnixTimestamp64Milli(InsertTime) >= %d) AS Late
FROM flows_raw`, ms(before1), ms(after1)+1, ms(before2), ms(after2)+1, ms(before2))
	if err := s.QueryInto(q, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("got %d rows", len(rows))
	}
	if r := rows[0]; r.N != 2*n || r.Window1 != n || r.Window2 != n || r.Late != n {
		t.Fatalf("flows_raw: %d rows, %d stamped within the first insert (%s), %d within the second (%s), %d at or after the second's start; want %d, %d, %d, %d",
			r.N, r.Window1, after1.Sub(before1), r.Window2, after2.Sub(before2), r.Late, 2*n, n, n, n)
	}

	// The docs' query over the first insert alone: each flow's latency is
	// between before1 and after1 minus its whole-second TimeReceived.
	if err := s.Exec("ALTER TABLE flows_raw DELETE WHERE toUnixTimestamp64Milli(InsertTime) >= " + fmt.Sprint(ms(before2)) + " SETTINGS mutations_sync = 1"); err != nil {
		t.Fatal(err)
	}
	lo, hi := int64(1<<62), int64(0)
	for _, m := range first {
		sec := int64(m.TimeReceivedNs/1e9) * 1000
		lo, hi = min(lo, ms(before1)-sec), max(hi, ms(after1)+1-sec)
	}
	var got []struct {
		Minute   string
		Flows    uint64
		P50, P99 float64
	}
	if err := s.QueryInto(strings.NewReplacer("AS p50_s", "AS P50", "AS p99_s", "AS P99").Replace(latencyQuery(t)), &got); err != nil {
		t.Fatal(err)
	}
	var flows uint64
	for _, r := range got {
		flows += r.Flows
		for name, v := range map[string]float64{"p50_s": r.P50, "p99_s": r.P99} {
			if ms := int64(v*1000 + 0.5); ms < lo || ms > hi {
				t.Errorf("minute %s: %s %.3f s, want between %.3f and %.3f", r.Minute, name, v, float64(lo)/1000, float64(hi)/1000)
			}
		}
	}
	if flows != n {
		t.Errorf("the latency query counts %d flows over %d minutes, want %d", flows, len(got), n)
	}
	t.Logf("latency query: %+v (bounds %.3f-%.3f s)", got, float64(lo)/1000, float64(hi)/1000)
}
