package clickhouse_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
)

// testAlerts are the records of two attacks as the detector writes them:
// an IPv4 target's start, update and end (every field set, non-ASCII and
// empty strings, the largest figures) and an IPv6 one's start.
func testAlerts() []detector.Alert {
	at := time.Date(2026, 1, 15, 22, 30, 7, 123456789, time.UTC)
	v4 := detector.Alert{Event: detector.EventStart, ID: "a1b2c3", Target: "203.0.113.7", TargetNet: "customer-ç",
		Vector: "dns-amp", At: at, Bps: 24_000_000_000, Pps: 2_500_000, Flows: 610,
		TopSrcAddr: []string{"8.8.8.9", "2.3.4.5"}, TopSrcAS: []uint32{15169, 3215}, TopSrcCountry: []string{"US", "FR"},
		Exporters: []string{"edge1.fra1"}}
	upd := v4
	upd.Event, upd.At, upd.Started = detector.EventUpdate, at.Add(5*time.Second), "2026-01-15T22:30:04Z"
	upd.PeakBps, upd.PeakPps, upd.PeakFlows = 1<<63, 1<<62, 1<<61
	end := upd
	end.Event, end.At, end.DurationS = detector.EventEnd, at.Add(31*time.Second), 33.5
	v6 := detector.Alert{Event: detector.EventStart, ID: "d4e5", Target: "2001:db8:300::42", Vector: "syn",
		At: at.Add(time.Millisecond), Pps: 3_000_000, TopSrcAddr: []string{}, TopSrcAS: []uint32{}, TopSrcCountry: []string{},
		Exporters: []string{"192.0.2.2"}}
	return []detector.Alert{v4, upd, end, v6}
}

// insertAlerts writes records into alerts_kafka as the Kafka engine would
// hand them over, at offsets 0, 1, …
func insertAlerts(t *testing.T, s interface{ Exec(string) error }, records []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("INSERT INTO alerts_kafka FORMAT JSONEachRow\n")
	for i, r := range records {
		// The virtual columns, as the Kafka engine fills them.
		fmt.Fprintf(&b, "%s, \"_topic\": \"alerts\", \"_partition\": 2, \"_offset\": %d}\n", strings.TrimSuffix(r, "}"), i)
	}
	if err := s.Exec(b.String()); err != nil {
		t.Fatal(err)
	}
}

type alertRow struct {
	At, Event, ID, Target, TargetNet, Vector string
	Bps, Pps, Flows                          uint64
	TopSrcAddr                               []string
	TopSrcAS                                 []uint32
	TopSrcCountry, Exporters                 []string
	Started                                  *string
	PeakBps, PeakPps, PeakFlows              uint64
	DurationS                                float64
	Topic                                    string
	Partition, Offset                        uint64
}

// TestAlertsArrive: the detector's JSON records, read by alerts_kafka
// (JSONEachRow), arrive in alerts with every field equal; a copy of a
// record (the Kafka engine is at least once) is gone after a merge; a
// record that is not an alert goes to flows_errors with the reason.
func TestAlertsArrive(t *testing.T) {
	s := schemaDB(t, true)
	alerts := testAlerts()
	var records []string
	for _, a := range alerts {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, string(b))
	}
	records = append(records, records[0]) // stored twice, as after a crash
	bad := []string{
		strings.Replace(records[0], `"event":"start"`, `"event":"begin"`, 1),
		strings.Replace(records[0], `"at":"2026-01-15T22:30:07.123456789Z"`, `"at":"yesterday"`, 1),
	}
	insertAlerts(t, s, append(records, bad...))

	var rows []alertRow
	const q = `SELECT toString(At) AS At, toString(Event) AS Event, ID, Target, TargetNet, Vector, Bps, Pps, Flows,
		TopSrcAddr, TopSrcAS, TopSrcCountry, Exporters, if(isNull(Started), NULL, toString(Started)) AS Started,
		PeakBps, PeakPps, PeakFlows, DurationS, Topic, Partition, Offset
		FROM alerts FINAL ORDER BY At, Event`
	if err := s.Exec("OPTIMIZE TABLE alerts FINAL"); err != nil {
		t.Fatal(err)
	}
	if err := s.QueryInto(q, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(alerts) {
		t.Fatalf("alerts holds %d rows, want %d (the copy merged away): %+v", len(rows), len(alerts), rows)
	}
	// ORDER BY At: v4 start, v6 start, update, end.
	order := []int{0, 3, 1, 2}
	for i, r := range rows {
		a := alerts[order[i]]
		var started *string
		if a.Started != "" {
			st, _ := time.Parse(time.RFC3339, a.Started)
			s := st.Format("2006-01-02 15:04:05.000000000")
			started = &s
		}
		want := alertRow{
			At: a.At.Format("2006-01-02 15:04:05.000000000"), Event: a.Event, ID: a.ID, Target: a.Target,
			TargetNet: a.TargetNet, Vector: a.Vector, Bps: a.Bps, Pps: a.Pps, Flows: a.Flows,
			TopSrcAddr: a.TopSrcAddr, TopSrcAS: a.TopSrcAS, TopSrcCountry: a.TopSrcCountry, Exporters: a.Exporters,
			Started: started, PeakBps: a.PeakBps, PeakPps: a.PeakPps, PeakFlows: a.PeakFlows,
			DurationS: a.DurationS, Topic: "alerts", Partition: 2, Offset: uint64(order[i]),
		}
		if order[i] == 0 {
			want.Offset = 4 // ReplacingMergeTree keeps the last copy
		}
		if want.TopSrcAddr == nil {
			want.TopSrcAddr, want.TopSrcAS, want.TopSrcCountry = []string{}, []uint32{}, []string{}
		}
		if !reflect.DeepEqual(r, want) {
			t.Errorf("row %d:\n got  %+v\n want %+v", i, r, want)
		}
	}

	type errRow struct {
		Topic             string
		Partition, Offset uint64
		Error             string
	}
	var errs []errRow
	if err := s.QueryInto("SELECT Topic, Partition, Offset, Error FROM flows_errors ORDER BY Offset", &errs); err != nil {
		t.Fatal(err)
	}
	wantErrs := []errRow{
		{"alerts", 2, 5, "invalid_field: event begin is not start, update or end"},
		{"alerts", 2, 6, "invalid_field: at yesterday is not an RFC3339 time"},
	}
	if !reflect.DeepEqual(errs, wantErrs) {
		t.Fatalf("flows_errors = %+v, want %+v", errs, wantErrs)
	}
}

// TestAlertsKafkaTable: the alerts Kafka table parses on the real engine,
// reads the alerts topic as JSON in its own group, routes errors, and its
// columns are exactly the JSON keys of detector.Alert (a renamed key would
// silently read as empty).
func TestAlertsKafkaTable(t *testing.T) {
	stmt := kafkaStatement(t, "alerts_kafka")
	s := session(t)
	out, err := s.Run("SELECT formatQuery("+chdb.Quote(stmt)+")", "TSVRaw")
	if err != nil {
		t.Fatalf("the alerts Kafka table statement does not parse: %v", err)
	}
	for _, want := range []string{
		"kafka_broker_list = 'kafka:9092'",
		"kafka_topic_list = 'alerts'",
		"kafka_group_name = 'clickhouse-alerts'",
		"kafka_format = 'JSONEachRow'",
		"kafka_handle_error_mode = 'stream'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("alerts_kafka lacks %q:\n%s", want, out)
		}
	}
	db := schemaDB(t, false)
	var cols []struct{ Name string }
	if err := db.QueryInto("SELECT name AS Name FROM system.columns WHERE database = currentDatabase() AND table = 'alerts_kafka' AND NOT startsWith(name, '_') ORDER BY name", &cols); err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, c := range cols {
		got = append(got, c.Name)
	}
	typ := reflect.TypeFor[detector.Alert]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if typ.Field(i).IsExported() && name != "-" {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("alerts_kafka columns %v, want the JSON keys of detector.Alert %v", got, want)
	}
}
