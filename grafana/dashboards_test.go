package grafana

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"go.yaml.in/yaml/v4"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// dashboard is the part of Grafana's dashboard model (schemaVersion 41)
// these files use.
type dashboard struct {
	UID           string                     `json:"uid"`
	Title         string                     `json:"title"`
	SchemaVersion int                        `json:"schemaVersion"`
	Editable      *bool                      `json:"editable"`
	Time          *struct{ From, To string } `json:"time"`
	Panels        []panel                    `json:"panels"`
	Templating    struct {
		List []json.RawMessage `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	GridPos    *gridPos        `json:"gridPos"`
	Datasource *datasource     `json:"datasource"`
	Targets    []target        `json:"targets"`
	Panels     []panel         `json:"panels"`
	Options    json.RawMessage `json:"options"`
}

type gridPos struct{ X, Y, W, H int }

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string      `json:"refId"`
	Datasource *datasource `json:"datasource"`
	RawSQL     string      `json:"rawSql"`
	Format     any         `json:"format"`
	Expr       string      `json:"expr"`
	EditorType string      `json:"editorType"`
}

var dashboardFiles = []string{"dashboards/traffic-postgres.json", "dashboards/traffic-clickhouse.json", "dashboards/pipeline.json"}

func readDashboard(t *testing.T, path string) dashboard {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON for a dashboard: %v", path, err)
	}
	return d
}

// provisioned reads the datasources of provisioning/datasources: uid -> type.
func provisioned(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("provisioning/datasources/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no datasource provisioning files: %v", err)
	}
	out := map[string]string{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			APIVersion  int `yaml:"apiVersion"`
			Datasources []struct {
				Name, UID, Type, Access string
			} `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if cfg.APIVersion != 1 || len(cfg.Datasources) == 0 {
			t.Errorf("%s: want apiVersion 1 and at least one datasource", f)
		}
		for _, d := range cfg.Datasources {
			if d.UID == "" || d.Name == "" || d.Type == "" {
				t.Errorf("%s: datasource %+v needs a name, a uid and a type", f, d)
			}
			if _, dup := out[d.UID]; dup {
				t.Errorf("%s: uid %s provisioned twice", f, d.UID)
			}
			out[d.UID] = d.Type
		}
	}
	for uid, typ := range map[string]string{"flows-postgres": "grafana-postgresql-datasource", "flows-clickhouse": "grafana-clickhouse-datasource", "flows-prometheus": "prometheus"} {
		if out[uid] != typ {
			t.Errorf("datasource %s has type %q, want %q", uid, out[uid], typ)
		}
	}
	return out
}

func TestDashboardProvider(t *testing.T) {
	raw, err := os.ReadFile("provisioning/dashboards/flow-pipeline.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.APIVersion != 1 || len(cfg.Providers) != 1 || cfg.Providers[0].Type != "file" || cfg.Providers[0].Options.Path != "/etc/grafana/dashboards" {
		t.Errorf("dashboard provider = %+v; want one file provider reading /etc/grafana/dashboards (where compose mounts them)", cfg)
	}
}

// panelTypes are the panel plugins built into Grafana 12 that we use.
var panelTypes = []string{"row", "timeseries", "table", "piechart", "stat", "bargauge", "text", "geomap"}

func TestDashboardsModel(t *testing.T) {
	ds := provisioned(t)
	uids := map[string]bool{}
	for _, f := range dashboardFiles {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := readDashboard(t, f)
			if d.UID == "" || len(d.UID) > 40 || d.Title == "" {
				t.Errorf("uid %q / title %q: both required, uid at most 40 characters", d.UID, d.Title)
			}
			if uids[d.UID] {
				t.Errorf("uid %s used twice", d.UID)
			}
			uids[d.UID] = true
			if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
				t.Errorf("schemaVersion %d: want one Grafana 12 loads without migrating datasource references (36..41)", d.SchemaVersion)
			}
			if d.Time == nil || d.Time.From == "" {
				t.Error("no default time range")
			}
			ids := map[int]bool{}
			queries := 0
			var walk func(ps []panel)
			walk = func(ps []panel) {
				for _, p := range ps {
					if p.ID <= 0 || ids[p.ID] {
						t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
					}
					ids[p.ID] = true
					if !slices.Contains(panelTypes, p.Type) {
						t.Errorf("panel %q: type %q is not a built-in panel", p.Title, p.Type)
					}
					if p.Title == "" {
						t.Errorf("panel %d has no title", p.ID)
					}
					if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
						t.Errorf("panel %q: gridPos %+v outside Grafana's 24-column grid", p.Title, p.GridPos)
					}
					if p.Type == "row" {
						walk(p.Panels)
						continue
					}
					if p.Type == "text" {
						if !strings.Contains(string(p.Options), `"content"`) {
							t.Errorf("text panel %q has no content", p.Title)
						}
						continue
					}
					if len(p.Targets) == 0 {
						t.Errorf("panel %q has no query", p.Title)
					}
					if p.Datasource == nil || ds[p.Datasource.UID] != p.Datasource.Type {
						t.Errorf("panel %q: datasource %+v is not provisioned (by uid and type)", p.Title, p.Datasource)
					}
					refs := map[string]bool{}
					for _, tg := range p.Targets {
						queries++
						if tg.RefID == "" || refs[tg.RefID] {
							t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
						}
						refs[tg.RefID] = true
						if tg.Datasource == nil || p.Datasource == nil || *tg.Datasource != *p.Datasource {
							t.Errorf("panel %q: query %s datasource %+v differs from the panel's", p.Title, tg.RefID, tg.Datasource)
						}
						switch ds[tg.Datasource.UID] {
						case "prometheus":
							if tg.Expr == "" {
								t.Errorf("panel %q: Prometheus query %s has no expr", p.Title, tg.RefID)
							}
						case "grafana-postgresql-datasource":
							if tg.RawSQL == "" || (tg.Format != "time_series" && tg.Format != "table") {
								t.Errorf("panel %q: PostgreSQL query %s needs rawSql and format time_series or table", p.Title, tg.RefID)
							}
						case "grafana-clickhouse-datasource":
							if tg.RawSQL == "" || tg.EditorType != "sql" {
								t.Errorf("panel %q: ClickHouse query %s needs rawSql and editorType sql", p.Title, tg.RefID)
							}
							if f, ok := tg.Format.(float64); !ok || (f != 0 && f != 1) {
								t.Errorf("panel %q: ClickHouse query %s format %v, want 0 (time series) or 1 (table)", p.Title, tg.RefID, tg.Format)
							}
						}
					}
				}
			}
			walk(d.Panels)
			if queries == 0 {
				t.Fatal("no query checked")
			}
		})
	}
}

// forEachTarget calls fn for every query of every panel, rows' panels
// included.
func forEachTarget(ps []panel, fn func(panel, target)) {
	for _, p := range ps {
		forEachTarget(p.Panels, fn)
		for _, tg := range p.Targets {
			fn(p, tg)
		}
	}
}

// sqlQuery is one SQL panel query, with what its result must look like.
type sqlQuery struct {
	panel, refID, sql string
}

func sqlQueries(t *testing.T, file string) []sqlQuery {
	t.Helper()
	var out []sqlQuery
	forEachTarget(readDashboard(t, file).Panels, func(p panel, tg target) {
		if tg.RawSQL != "" {
			out = append(out, sqlQuery{p.Title, tg.RefID, tg.RawSQL})
		}
	})
	if len(out) == 0 {
		t.Fatalf("%s has no SQL query", file)
	}
	return out
}

// Expected result columns per panel, in order: what the panel's
// visualization and field overrides are written against.
var pgColumns = map[string][]string{
	"Traffic (bits/s)":              {"time", "metric", "value"},
	"Traffic (packets/s)":           {"time", "metric", "value"},
	"IPv4 / IPv6":                   {"Family", "Bytes"},
	"Traffic per exporter (bits/s)": {"time", "metric", "value"},
	"Top sources":                   {"Source", "Bytes", "Packets", "Flows"},
	"Top destinations":              {"Destination", "Bytes", "Packets", "Flows"},
	"Top AS pairs":                  {"Source AS", "Destination AS", "Bytes", "Packets"},
	"Top ports":                     {"Port", "Bytes", "Packets"},
	"Protocols":                     {"Protocol", "Bytes"},
	"Attacks":                       attackColumns,
}

var chColumns = map[string][]string{
	"Traffic (bits/s)":              {"time", "family", "bps"},
	"Traffic (packets/s)":           {"time", "family", "pps"},
	"IPv4 / IPv6":                   {"Family", "Bytes"},
	"Traffic per exporter (bits/s)": {"time", "exporter", "bps"},
	"Top sources":                   {"Source", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top destinations":              {"Destination", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top AS pairs":                  {"SrcAS", "DstAS", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top ports":                     {"Port", "ScaledBytes", "ScaledPackets"},
	"Protocols":                     {"Protocol", "ScaledBytes"},
	"Rejected records":              {"Error", "Records", "Last"},
	"Attacks":                       attackColumns,
}

// mockFlows generates n mocker flows received over the hour before end, in
// time order, and the totals the dashboards must find in them.
type expected struct {
	bytes       uint64            // scaled
	bySrc       map[string]uint64 // scaled bytes per source address
	byDst       map[string]uint64
	byExporter  map[string]uint64
	flowsPerSrc map[string]int
	// rateWidth is the span each rate value averages over (0: 1 minute,
	// the default window's interval).
	rateWidth time.Duration
	attacks   [][]string // the Attacks table (attacks_test.go)
}

func mockFlows(n int, end time.Time) ([]*pb.FlowMessage, expected) {
	g := mocker.NewGenerator(7)
	exp := expected{bySrc: map[string]uint64{}, byDst: map[string]uint64{}, byExporter: map[string]uint64{}, flowsPerSrc: map[string]int{}}
	flows := make([]*pb.FlowMessage, n)
	start := end.Add(-time.Hour)
	for i := range flows {
		m := &pb.FlowMessage{}
		g.Next(m, start.Add(time.Duration(i)*time.Hour/time.Duration(n)))
		flows[i] = m
		scaled := m.Bytes * max(m.SamplingRate, 1)
		exp.bytes += scaled
		src, _ := pgsink.AddrOf(m.SrcAddr)
		dst, _ := pgsink.AddrOf(m.DstAddr)
		sampler, _ := pgsink.AddrOf(m.SamplerAddress)
		exp.bySrc[src.String()] += scaled
		exp.byDst[dst.String()] += scaled
		exp.byExporter[sampler.String()] += scaled
		exp.flowsPerSrc[src.String()]++
	}
	return flows, exp
}

// queryWindow covers the generated flows with the panel's default range.
func queryWindow(end time.Time) queryContext {
	return queryContext{from: end.Add(-time.Hour), to: end, interval: time.Minute, vars: map[string]string{}}
}

// checkAddress fails when a shown address is not an address, or shows an
// IPv4 address in its IPv4-mapped IPv6 form.
func checkAddress(t *testing.T, where, s string) {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Errorf("%s: %q is not an address: %v", where, s, err)
		return
	}
	if a.Is4In6() {
		t.Errorf("%s: %q shows an IPv4 address in its ::ffff: form", where, s)
	}
}

// checkResult applies the checks every dashboard shares to one result.
func checkResult(t *testing.T, q sqlQuery, cols []string, rows [][]any, want []string, exp expected) {
	t.Helper()
	if !slices.Equal(cols, want) {
		t.Errorf("panel %q: columns %v, want %v", q.panel, cols, want)
		return
	}
	if q.panel == "Attacks" {
		checkRows(t, "panel Attacks", rows, exp.attacks)
		return
	}
	if q.panel == "Rejected records" {
		if len(rows) != 0 {
			t.Errorf("panel %q: %d rows from valid flows, want 0", q.panel, len(rows))
		}
		return
	}
	if len(rows) == 0 {
		t.Errorf("panel %q: no rows", q.panel)
		return
	}
	num := func(v any) uint64 {
		switch x := v.(type) {
		case json.Number:
			f, _ := x.Float64()
			return uint64(f)
		case float64:
			return uint64(x)
		case int64:
			return uint64(x)
		case int32:
			return uint64(x)
		case string:
			f, _ := strconv.ParseFloat(x, 64)
			return uint64(f)
		}
		if n, ok := v.(pgtype.Numeric); ok {
			f, err := n.Float64Value()
			if err != nil || !f.Valid {
				t.Fatalf("panel %q: numeric %v: %v", q.panel, v, err)
			}
			return uint64(f.Float64)
		}
		t.Fatalf("panel %q: %v (%T) is not a number", q.panel, v, v)
		return 0
	}
	switch want[0] {
	case "Source", "Destination":
		m := map[string]map[string]uint64{"Source": exp.bySrc, "Destination": exp.byDst}[want[0]]
		var top uint64
		for _, v := range m {
			top = max(top, v)
		}
		if len(rows) != 10 {
			t.Errorf("panel %q: %d rows, want the top 10", q.panel, len(rows))
		}
		for i, r := range rows {
			addr := toString(r[0])
			checkAddress(t, q.panel, addr)
			if got := num(r[1]); got != m[addr] {
				t.Errorf("panel %q: %s has %d bytes, want %d", q.panel, addr, got, m[addr])
			}
			if i == 0 && num(r[1]) != top {
				t.Errorf("panel %q: first row has %d bytes, the top talker has %d", q.panel, num(r[1]), top)
			}
		}
	case "Family":
		var sum uint64
		for _, r := range rows {
			sum += num(r[1])
		}
		if sum != exp.bytes {
			t.Errorf("panel %q: families add up to %d bytes, want all %d", q.panel, sum, exp.bytes)
		}
	case "time":
		if want[1] == "metric" || want[1] == "exporter" {
			if q.panel == "Traffic per exporter (bits/s)" {
				seen := map[string]bool{}
				for _, r := range rows {
					checkAddress(t, q.panel, toString(r[1]))
					seen[toString(r[1])] = true
				}
				if len(seen) != len(exp.byExporter) {
					t.Errorf("panel %q: %d exporters, want %d", q.panel, len(seen), len(exp.byExporter))
				}
			}
		}
		if q.panel == "Traffic (bits/s)" {
			// Rate times the bucket width gives back every byte.
			var bits float64
			for _, r := range rows {
				bits += float64(num(r[2]))
			}
			width := cmp.Or(exp.rateWidth, time.Minute).Seconds()
			if total := float64(exp.bytes) * 8 / width; bits < total*0.999 || bits > total*1.001 {
				t.Errorf("panel %q: bit rates add up to %.0f (x %v s), want %.0f", q.panel, bits, width, total)
			}
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case netip.Prefix:
		return x.Addr().String()
	}
	return strings.TrimSpace(strings.Trim(strings.TrimSpace(jsonString(v)), `"`))
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPostgresQueries(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	if pg == nil {
		return
	}
	dsn := pg.CreateDB(t, "grafana_dashboards")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Fill the database the way the inserter does: its schema, its sink.
	sink, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "grafana-test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	// On a 5-minute boundary, as the rollups' buckets are.
	end := time.Now().UTC().Truncate(5 * time.Minute)
	flows, exp := mockFlows(3000, end)
	// As the enricher writes them to flows-enriched, decoded as the
	// inserter does: every enrichment column and flows_5m_enriched filled.
	data, eexp := enrichedRecord(t, flows)
	b := pgsink.NewBatch("flows", 0)
	b.BeginRecord(0)
	i := 0
	var m pb.FlowMessage
	if err := pb.UnmarshalRecord(data, &m, func(m *pb.FlowMessage) error {
		if err := pgsink.ValidateFlow(m, pgsink.NewLimits(end, 0, 10*time.Minute)); err != nil {
			t.Fatalf("enriched mocker flow %d is invalid for the inserter: %v", i, err)
		}
		b.AddFlow(m)
		i++
		return nil
	}); err != nil || i != len(flows) {
		t.Fatalf("decode the enriched record: %d flows of %d, %v", i, len(flows), err)
	}
	b.EndRecord()
	res, err := sink.Write(ctx, b)
	if err != nil || res.Flows != len(flows) {
		t.Fatalf("write %d flows: stored %d, %v", len(flows), res.Flows, err)
	}
	alerts, err := pgsink.AlertsOf(dashboardAlerts(end))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.StoreAlerts(ctx, alerts); err != nil {
		t.Fatal(err)
	}
	exp.attacks = wantAttackRows(end)

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	qs := sqlQueries(t, "dashboards/traffic-postgres.json")
	if len(qs) != len(pgColumns)+len(pgEnrichedColumns) {
		t.Errorf("%d SQL panels, %d expected: keep pgColumns and pgEnrichedColumns in step with the dashboard", len(qs), len(pgColumns)+len(pgEnrichedColumns))
	}
	check := func(t *testing.T, q sqlQuery, cols []string, data [][]any, exp expected) {
		if want, ok := pgEnrichedColumns[q.panel]; ok {
			if !slices.Equal(cols, want) {
				t.Fatalf("panel %q: columns %v, want %v", q.panel, cols, want)
			}
			checkEnriched(t, q, pgNumbers(data), eexp)
			return
		}
		checkResult(t, q, cols, data, pgColumns[q.panel], exp)
	}
	// The default hour reads the rows.
	for _, q := range qs {
		t.Run("1h/"+q.panel+"/"+q.refID, func(t *testing.T) {
			cols, data := runPostgres(t, conn, q, queryWindow(end))
			check(t, q, cols, data, exp)
		})
	}
	checkPostgresAnnotations(t, conn, end)
	day := queryContext{from: end.Add(-24 * time.Hour), to: end, interval: 2 * time.Minute, vars: map[string]string{}}
	// Panels without a rollup read the rows over a day too.
	var rowPanels []string
	for _, q := range qs {
		if _, ok := pgEnrichedColumns[q.panel]; ok && !strings.Contains(q.sql, "flows_5m") {
			rowPanels = append(rowPanels, q.panel)
			t.Run("24h-rows/"+q.panel+"/"+q.refID, func(t *testing.T) {
				cols, data := runPostgres(t, conn, q, day)
				check(t, q, cols, data, exp)
			})
		}
	}
	if want := []string{"Flows sampled at the exporters file's rate"}; !slices.Equal(rowPanels, want) {
		t.Errorf("Enrichment panels reading only the rows: %v, want %v", rowPanels, want)
	}
	// A day reads flows_5m or flows_5m_enriched, where there is one: with
	// the rows gone, those panels must still find every byte, rates
	// averaged over 5 minutes.
	if _, err := conn.Exec(ctx, "TRUNCATE flows"); err != nil {
		t.Fatal(err)
	}
	long := exp
	long.rateWidth = 5 * time.Minute
	var rollupPanels []string
	for _, q := range qs {
		if !strings.Contains(q.sql, "flows_5m") {
			continue
		}
		rollupPanels = append(rollupPanels, q.panel)
		t.Run("24h/"+q.panel+"/"+q.refID, func(t *testing.T) {
			cols, data := runPostgres(t, conn, q, day)
			check(t, q, cols, data, long)
		})
	}
	if want := []string{"Traffic (bits/s)", "Traffic (packets/s)", "IPv4 / IPv6", "Top AS pairs", "Top source countries", "Top destination countries",
		"Top AS by name", "Top customers", "Top sites", "Traffic per exporter and interface"}; !slices.Equal(rollupPanels, want) {
		t.Errorf("panels reading flows_5m or flows_5m_enriched: %v, want %v", rollupPanels, want)
	}
}

// The PostgreSQL dashboard's Enrichment panels, with the columns they are
// written against (those of the ClickHouse dashboard, so checkEnriched
// checks both).
var pgEnrichedColumns = map[string][]string{
	"Top source countries":                       {"Country", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top destination countries":                  {"Country", "ScaledBytes", "ScaledPackets", "Flows"},
	"Top AS by name":                             {"AS", "Name", "SentBytes", "ReceivedBytes", "ScaledBytes"},
	"Top customers":                              {"Customer", "Site", "ToBytes", "FromBytes", "ScaledBytes"},
	"Top sites":                                  {"Site", "ToBytes", "FromBytes", "ScaledBytes"},
	"Traffic per exporter and interface":         {"Exporter", "Interface", "Direction", "Boundary", "ScaledBytes", "Flows"},
	"Flows sampled at the exporters file's rate": {"Time", "Exporter", "Sampler", "Interface", "SamplingRate", "SampledBytes", "ScaledBytes"},
}

// pgNumbers turns pgx's numbers into json.Number, as checkEnriched reads
// ClickHouse's.
func pgNumbers(rows [][]any) [][]any {
	for _, r := range rows {
		for i, v := range r {
			switch v.(type) {
			case pgtype.Numeric, int64, int32, int16:
				r[i] = json.Number(jsonString(v))
			}
		}
	}
	return rows
}

// runPostgres expands q for qc and runs it, returning the column names and
// rows.
func runPostgres(t *testing.T, conn *pgx.Conn, q sqlQuery, qc queryContext) ([]string, [][]any) {
	t.Helper()
	if _, ok := pgColumns[q.panel]; !ok && pgEnrichedColumns[q.panel] == nil {
		t.Fatalf("no expected columns for panel %q: add it to pgColumns or pgEnrichedColumns", q.panel)
	}
	sql, err := expandPostgres(q.sql, qc)
	if err != nil {
		t.Fatalf("expand: %v", err)
	}
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("query: %v\n%s", err, sql)
	}
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	var data [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("query: %v\n%s", err, sql)
	}
	return cols, data
}

func TestClickHouseQueries(t *testing.T) {
	s := chdb.Start(t)
	if s == nil {
		return
	}
	if err := s.ApplySchema("../compose/clickhouse", true); err != nil {
		t.Fatal(err)
	}
	// On a 5-minute boundary, as the rollups' buckets are.
	end := time.Now().UTC().Truncate(5 * time.Minute)
	flows, exp := mockFlows(3000, end)
	// As the enricher writes them to flows-enriched.
	data, eexp := enrichedRecord(t, flows)
	proto, err := filepath.Abs("../pb/flow.proto")
	if err != nil {
		t.Fatal(err)
	}
	// Into the Kafka table (a Null table in chDB): the materialized views
	// fill flows_raw and the rollups as a consumed block would.
	if err := s.InsertProtobuf("flows", data, proto+":FlowMessage"); err != nil {
		t.Fatal(err)
	}
	var n []struct {
		C json.Number `json:"c"`
	}
	if err := s.QueryInto("SELECT count() AS c FROM flows_raw", &n); err != nil || len(n) != 1 || n[0].C.String() != strconv.Itoa(len(flows)) {
		t.Fatalf("flows_raw holds %v rows (%v), want %d", n, err, len(flows))
	}
	insertClickHouseAlerts(t, s, end)
	exp.attacks = wantAttackRows(end)
	checkClickHouseAnnotations(t, s, end)
	qc := queryWindow(end)
	qs := sqlQueries(t, "dashboards/traffic-clickhouse.json")
	for _, q := range qs {
		t.Run(q.panel+"/"+q.refID, func(t *testing.T) {
			sql, err := expandClickHouse(q.sql, qc)
			if err != nil {
				t.Fatalf("expand: %v", err)
			}
			cols, rows := runClickHouse(t, s, sql)
			if want, ok := chEnrichedColumns[q.panel]; ok {
				if !slices.Equal(cols, want) {
					t.Fatalf("panel %q: columns %v, want %v", q.panel, cols, want)
				}
				checkEnriched(t, q, rows, eexp)
				return
			}
			want, ok := chColumns[q.panel]
			if !ok {
				t.Fatalf("no expected columns for panel %q: add it to chColumns", q.panel)
			}
			checkResult(t, q, cols, rows, want, exp)
		})
	}
	if len(qs) != len(chColumns)+len(chEnrichedColumns) {
		t.Errorf("%d SQL panels, %d expected: keep chColumns in step with the dashboard", len(qs), len(chColumns))
	}
}

// TestPipelineMetricsExist checks that every flowpipeline_* series the
// Pipeline dashboard plots is one our code registers, so a renamed metric
// cannot leave a panel silently empty.
func TestPipelineMetricsExist(t *testing.T) {
	var src strings.Builder
	for _, dir := range []string{"../mocker", "../inserter", "../enricher", "../enricher/sources", "../detector"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			src.Write(raw)
		}
	}
	code := src.String()
	// Names are written whole or as Namespace/Subsystem/Name parts.
	registered := func(name string) bool {
		if strings.Contains(code, `"`+name+`"`) {
			return true
		}
		for _, sub := range []string{"mocker", "inserter", "enricher", "detector"} {
			if rest, ok := strings.CutPrefix(name, "flowpipeline_"+sub+"_"); ok && strings.Contains(code, `"`+sub+`"`) && strings.Contains(code, `Name: "`+rest+`"`) {
				return true
			}
		}
		return false
	}
	raw, err := os.ReadFile("dashboards/pipeline.json")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, w := range strings.FieldsFunc(string(raw), func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		if strings.HasPrefix(w, "flowpipeline_") {
			names = append(names, strings.TrimSuffix(strings.TrimSuffix(w, "_bucket"), "_count"))
		}
	}
	sort.Strings(names)
	names = slices.Compact(names)
	for _, want := range []string{"flowpipeline_enricher_flows_in_total", "flowpipeline_enricher_flows_out_total", "flowpipeline_enricher_records_invalid_total",
		"flowpipeline_enricher_transactions_total", "flowpipeline_enricher_lag_records", "flowpipeline_enricher_lookups_total",
		"flowpipeline_detector_flows_in_total", "flowpipeline_detector_active_attacks", "flowpipeline_detector_alerts_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("the Pipeline dashboard does not plot %s", want)
		}
	}
	if len(names) < 5 {
		t.Fatalf("only %d flowpipeline metrics in the Pipeline dashboard: %v", len(names), names)
	}
	for _, n := range names {
		if !registered(n) {
			t.Errorf("the Pipeline dashboard plots %s, which none of the mocker, the enricher, the detector and the inserter registers", n)
		}
	}
}

// attribution is the geodata credit (docs/geodata.md) both Traffic
// dashboards show with their Enrichment panels.
const attribution = "IP to country: ip-location-db, from RIR data by the NRO (nro.net), CC BY 4.0. AS numbers and names: ip-location-db asn, from RouteViews (routeviews.org), DB-IP (db-ip.com) and the NRO, CC BY 4.0."

func TestDashboardsAttribution(t *testing.T) {
	for _, f := range []string{"dashboards/traffic-postgres.json", "dashboards/traffic-clickhouse.json"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Description string `json:"description"`
			Panels      []struct {
				Type    string `json:"type"`
				Options struct {
					Content string `json:"content"`
				} `json:"options"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(d.Description, attribution) {
			t.Errorf("%s: the description does not credit the geodata: %q", f, d.Description)
		}
		texts := 0
		for _, p := range d.Panels {
			if p.Type == "text" && p.Options.Content == attribution {
				texts++
			}
		}
		if texts != 1 {
			t.Errorf("%s: %d text panels with the attribution, want 1", f, texts)
		}
	}
}

// runClickHouse runs sql and returns the column names and rows, numbers
// as json.Number.
func runClickHouse(t *testing.T, s *chdb.Session, sql string) ([]string, [][]any) {
	t.Helper()
	out, err := s.Run(sql, "JSONCompactEachRowWithNames")
	if err != nil {
		t.Fatalf("query: %v\n%s", err, sql)
	}
	var cols []string
	var rows [][]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		var row []any
		if err := dec.Decode(&row); err != nil {
			t.Fatalf("decode %q: %v", sc.Text(), err)
		}
		if cols == nil {
			for _, c := range row {
				cols = append(cols, c.(string))
			}
			continue
		}
		rows = append(rows, row)
	}
	return cols, rows
}
