package grafana

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
)

// The attacks the traffic dashboards show: the detector's alerts, from
// the alerts table, as annotations on the graphs and an "Attacks" table.

// attackColumns are the "Attacks" table's columns, the same on both
// dashboards.
var attackColumns = []string{"Detected", "Ended", "Status", "Target", "Network", "Vector", "PeakBps", "PeakPps", "DurationS",
	"TopSourceAS", "Exporters"}

// dashboardAlerts are three attacks around the default hour before end:
// a DNS amplification that began and ended within it, a SYN flood still
// going on at end, and one that ended two hours earlier (shown nowhere).
func dashboardAlerts(end time.Time) []detector.Alert {
	dns := detector.Alert{Event: detector.EventStart, ID: "dns1", Target: "203.0.113.7", TargetNet: "customer-c", Vector: "dns-amp",
		At: end.Add(-40 * time.Minute), Bps: 24_000_000_000, Pps: 2_500_000, Flows: 610,
		TopSrcAddr: []string{"8.8.8.9", "2.3.4.5"}, TopSrcAS: []uint32{15169, 3215}, TopSrcCountry: []string{"US", "FR"}, Exporters: []string{"edge1.fra1"}}
	dnsUp := dns
	dnsUp.Event, dnsUp.At, dnsUp.Started = detector.EventUpdate, dns.At.Add(5*time.Second), dns.At.Add(-3*time.Second).Format(time.RFC3339)
	dnsUp.Bps, dnsUp.PeakBps, dnsUp.PeakPps, dnsUp.PeakFlows = 30_000_000_000, 31_000_000_000, 2_900_000, 700
	dnsUp.TopSrcAS = []uint32{15169, 3215, 2906}
	dnsEnd := dnsUp
	dnsEnd.Event, dnsEnd.At, dnsEnd.DurationS = detector.EventEnd, dns.At.Add(33*time.Second), 33
	syn := detector.Alert{Event: detector.EventStart, ID: "syn1", Target: "2001:db8:300::42", Vector: "syn",
		At: end.Add(-10 * time.Minute), Bps: 1_200_000_000, Pps: 3_000_000, Flows: 700,
		TopSrcAddr: []string{}, TopSrcAS: []uint32{}, TopSrcCountry: []string{}, Exporters: []string{"edge1.nyc1", "192.0.2.2"}}
	old := dns
	old.ID, old.At = "old1", end.Add(-3*time.Hour)
	oldEnd := old
	oldEnd.Event, oldEnd.At, oldEnd.Started, oldEnd.DurationS = detector.EventEnd, end.Add(-170*time.Minute), old.At.Format(time.RFC3339), 600
	return []detector.Alert{old, oldEnd, dns, dnsUp, dnsEnd, syn}
}

// wantAttackRows is the "Attacks" table of dashboardAlerts, as strings
// (times in UTC, "2006-01-02 15:04:05"; empty for NULL).
func wantAttackRows(end time.Time) [][]string {
	ts := func(t time.Time) string { return t.UTC().Format(time.DateTime) }
	return [][]string{
		{ts(end.Add(-10 * time.Minute)), "", "ongoing", "2001:db8:300::42", "", "syn", "1200000000", "3000000", "", "", "edge1.nyc1 192.0.2.2"},
		{ts(end.Add(-40 * time.Minute)), ts(end.Add(-40*time.Minute + 33*time.Second)), "ended", "203.0.113.7", "customer-c", "dns-amp",
			"31000000000", "2900000", "33", "15169 3215 2906", "edge1.fra1"},
	}
}

// wantAnnotations are the annotations of dashboardAlerts over the hour
// before end: time, end time, text, tags.
func wantAnnotations(end time.Time) [][]string {
	ts := func(t time.Time) string { return t.UTC().Format(time.DateTime) }
	return [][]string{
		{ts(end.Add(-40 * time.Minute)), ts(end.Add(-40*time.Minute + 33*time.Second)),
			"dns-amp attack on 203.0.113.7 (customer-c): peak 31000000000 bit/s, 2900000 packets/s", "dns-amp,203.0.113.7"},
		{ts(end.Add(-10 * time.Minute)), ts(end), "syn attack on 2001:db8:300::42: peak 1200000000 bit/s, 3000000 packets/s", "syn,2001:db8:300::42"},
	}
}

// cell shows one result value as the wanted rows write it: times in UTC
// to the second, numbers plainly, arrays (ClickHouse tags) joined by
// commas, NULL as "".
func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.DateTime)
	case string:
		if t, err := time.Parse("2006-01-02 15:04:05.999999999", x); err == nil {
			return t.Format(time.DateTime)
		}
		return x
	case []any:
		var parts []string
		for _, p := range x {
			parts = append(parts, cell(p))
		}
		return strings.Join(parts, ",")
	case float64:
		return fmt.Sprint(x)
	}
	return toString(v)
}

func checkRows(t *testing.T, what string, rows [][]any, want [][]string) {
	t.Helper()
	var got [][]string
	for _, r := range rows {
		var row []string
		for _, v := range r {
			row = append(row, cell(v))
		}
		got = append(got, row)
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// annotation is one entry of a dashboard's annotations list.
type annotation struct {
	Name       string      `json:"name"`
	Datasource *datasource `json:"datasource"`
	Enable     bool        `json:"enable"`
	Target     *target     `json:"target"`
}

func annotations(t *testing.T, file string) []annotation {
	t.Helper()
	var d struct {
		Annotations struct {
			List []annotation `json:"list"`
		} `json:"annotations"`
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Annotations.List) != 1 || d.Annotations.List[0].Name != "Attacks" || !d.Annotations.List[0].Enable ||
		d.Annotations.List[0].Target == nil || d.Annotations.List[0].Target.RawSQL == "" {
		t.Fatalf("%s: annotations %+v, want one enabled query named Attacks", file, d.Annotations.List)
	}
	return d.Annotations.List
}

// TestAttacksAnnotationModel: the annotation of each traffic dashboard
// queries its own, provisioned datasource.
func TestAttacksAnnotationModel(t *testing.T) {
	ds := provisioned(t)
	for _, f := range []string{"dashboards/traffic-postgres.json", "dashboards/traffic-clickhouse.json"} {
		for _, a := range annotations(t, f) {
			panelDS := readDashboard(t, f).Panels[1].Datasource
			if a.Datasource == nil || ds[a.Datasource.UID] != a.Datasource.Type || *a.Datasource != *panelDS ||
				a.Target.Datasource == nil || *a.Target.Datasource != *a.Datasource {
				t.Errorf("%s: annotation %s datasource %+v (query %+v), want the dashboard's %+v", f, a.Name, a.Datasource, a.Target.Datasource, panelDS)
			}
		}
	}
}

// checkPostgresAnnotations runs the PostgreSQL dashboard's annotation
// query over the hour before end.
func checkPostgresAnnotations(t *testing.T, conn *pgx.Conn, end time.Time) {
	t.Helper()
	for _, a := range annotations(t, "dashboards/traffic-postgres.json") {
		sql, err := expandPostgres(a.Target.RawSQL, queryWindow(end))
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(context.Background(), sql)
		if err != nil {
			t.Fatalf("annotation %s: %v\n%s", a.Name, err, sql)
		}
		var cols []string
		for _, f := range rows.FieldDescriptions() {
			cols = append(cols, f.Name)
		}
		data, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"time", "timeend", "text", "tags"}; !slices.Equal(cols, want) {
			t.Fatalf("annotation %s: columns %v, want %v (Grafana's names for PostgreSQL annotations)", a.Name, cols, want)
		}
		checkRows(t, "PostgreSQL annotation "+a.Name, data, wantAnnotations(end))
	}
}

// insertClickHouseAlerts writes dashboardAlerts into alerts_kafka as the
// Kafka engine hands records over.
func insertClickHouseAlerts(t *testing.T, s *chdb.Session, end time.Time) {
	t.Helper()
	var b strings.Builder
	b.WriteString("INSERT INTO alerts_kafka FORMAT JSONEachRow\n")
	for _, a := range dashboardAlerts(end) {
		j, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	if err := s.Exec(b.String()); err != nil {
		t.Fatal(err)
	}
}

// checkClickHouseAnnotations runs the ClickHouse dashboard's annotation
// query over the hour before end.
func checkClickHouseAnnotations(t *testing.T, s *chdb.Session, end time.Time) {
	t.Helper()
	for _, a := range annotations(t, "dashboards/traffic-clickhouse.json") {
		sql, err := expandClickHouse(a.Target.RawSQL, queryWindow(end))
		if err != nil {
			t.Fatal(err)
		}
		cols, rows := runClickHouse(t, s, sql)
		if want := []string{"time", "timeEnd", "text", "tags"}; !slices.Equal(cols, want) {
			t.Fatalf("annotation %s: columns %v, want %v (the ClickHouse plugin's names for annotations)", a.Name, cols, want)
		}
		checkRows(t, "ClickHouse annotation "+a.Name, rows, wantAnnotations(end))
	}
}
