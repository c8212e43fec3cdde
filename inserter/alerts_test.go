package inserter

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// testAttackAlerts are the start, update and end alerts of n attacks,
// numbered from first, as the detector writes them. Times are whole
// microseconds: timestamptz keeps no more.
func testAttackAlerts(first, n int) []detector.Alert {
	base := time.Date(2026, 1, 15, 22, 30, 0, 0, time.UTC)
	vectors := detector.VectorNames()
	var out []detector.Alert
	for i := first; i < first+n; i++ {
		at := base.Add(time.Duration(i)*time.Minute + time.Duration(i)*time.Microsecond)
		start := detector.Alert{Event: detector.EventStart, ID: fmt.Sprintf("attack-%03d", i),
			Target: fmt.Sprintf("203.0.113.%d", i%250+1), TargetNet: []string{"customer-c", "", "clïent-ü"}[i%3],
			Vector: vectors[i%len(vectors)], At: at, Bps: uint64(i) * 1e9, Pps: uint64(i) * 1e5, Flows: uint64(i),
			TopSrcAddr: []string{"8.8.8.8", "2a00:1450::1"}[:i%3%2+1], TopSrcAS: []uint32{15169, 4294967295}[:i%2+1],
			TopSrcCountry: []string{"US", "IE"}[:i%2+1], Exporters: []string{"edge1.fra1"}}
		if i%5 == 0 { // the detector found no sources
			start.TopSrcAddr, start.TopSrcAS, start.TopSrcCountry = []string{}, []uint32{}, []string{}
		}
		update := start
		update.Event, update.At, update.Started = detector.EventUpdate, at.Add(5*time.Second), at.Add(-3*time.Second).Format(time.RFC3339)
		update.PeakBps, update.PeakPps, update.PeakFlows = 1<<62, uint64(i)*2e5, uint64(i)*2
		end := update
		end.Event, end.At, end.DurationS = detector.EventEnd, at.Add(30*time.Second), 33+float64(i)/4
		out = append(out, start, update, end)
	}
	return out
}

// produceAlerts writes records to topic in one Kafka transaction, keyed
// by target, as the detector does.
func produceAlerts(t *testing.T, k *testenv.Kafka, topic string, values [][]byte, keys []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(testenv.UniqueName(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(keys[i]), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

func alertRecords(t *testing.T, alerts []detector.Alert) ([][]byte, []string) {
	t.Helper()
	var values [][]byte
	var keys []string
	for _, a := range alerts {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		values, keys = append(values, b), append(keys, a.Target)
	}
	return values, keys
}

func (r *running) waitAlerts(t *testing.T, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.in.AlertsStored() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.in.AlertsStored(); got != want {
		t.Fatalf("stored %d alerts, want %d", got, want)
	}
}

// storedAlerts reads the alerts table back into detector.Alert values.
func storedAlerts(t *testing.T, dsn string) []detector.Alert {
	t.Helper()
	conn := pgConn(t, dsn)
	rows, err := conn.Query(context.Background(), `SELECT at, event, id, target, target_net, vector, bps, pps, flows,
  top_src_addr, top_src_as, top_src_country, exporters, started, peak_bps, peak_pps, peak_flows, duration_s
FROM alerts ORDER BY id, at`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (detector.Alert, error) {
		var a detector.Alert
		var as []int64
		var started *time.Time
		err := row.Scan(&a.At, &a.Event, &a.ID, &a.Target, &a.TargetNet, &a.Vector, &a.Bps, &a.Pps, &a.Flows,
			&a.TopSrcAddr, &as, &a.TopSrcCountry, &a.Exporters, &started, &a.PeakBps, &a.PeakPps, &a.PeakFlows, &a.DurationS)
		a.At = a.At.UTC()
		a.TopSrcAS = make([]uint32, len(as))
		for i, v := range as {
			a.TopSrcAS[i] = uint32(v)
		}
		if started != nil {
			a.Started = started.UTC().Format(time.RFC3339)
		}
		return a, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAlertMatchesDetector: pgsink.Alert, which the inserter decodes the
// alerts topic into, has exactly detector.Alert's JSON keys and types.
func TestAlertMatchesDetector(t *testing.T) {
	fields := func(typ reflect.Type) map[string]string {
		out := map[string]string{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.IsExported() {
				out[f.Tag.Get("json")] = f.Type.String()
			}
		}
		return out
	}
	sink, det := fields(reflect.TypeFor[pgsink.Alert]()), fields(reflect.TypeFor[detector.Alert]())
	if !reflect.DeepEqual(sink, det) {
		t.Fatalf("pgsink.Alert's JSON fields %v differ from detector.Alert's %v", sink, det)
	}
}

// TestAlertsExactlyOnce, on the real broker and PostgreSQL: alerts a
// crashed predecessor stored without committing its Kafka offsets are
// delivered again and left out; every other alert is stored once with
// every field equal; records that are not storable alerts are counted by
// reason; a restarted inserter resumes after the committed offsets, and
// a record sent twice is stored once.
func TestAlertsExactlyOnce(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	flows, alertsTopic := testenv.UniqueName(t)+"-flows", testenv.UniqueName(t)+"-alerts"
	k.CreateTopic(t, flows, 1)
	k.CreateTopic(t, alertsTopic, 2)

	first := testAttackAlerts(0, 20) // 60 alerts
	values, keys := alertRecords(t, first)
	bad := [][]byte{[]byte("not json"), []byte(`{"event":"begin","id":"x","target":"203.0.113.1","vector":"syn","at":"2026-01-15T22:30:00Z"}`),
		[]byte(`{"event":"start","id":"x","target":"203.0.113.1\u0000","vector":"syn","at":"2026-01-15T22:30:00Z"}`)}
	values = append(values, bad...)
	keys = append(keys, "a", "b", "c")
	produceAlerts(t, k, alertsTopic, values, keys)

	// A predecessor stored the first 25 and died before its Kafka commit.
	sink, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "g"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	crashed, err := pgsink.AlertsOf(first[:25])
	if err != nil {
		t.Fatal(err)
	}
	if n, err := sink.StoreAlerts(ctx, crashed); err != nil || n != 25 {
		t.Fatalf("StoreAlerts = %d, %v; want 25 stored", n, err)
	}
	sink.Close()

	cfg := Config{Brokers: k.Brokers(), Topic: flows, AlertsTopic: alertsTopic, Group: "g", KafkaVersion: k.Version(), PostgresDSN: dsn}
	r := start(t, cfg)
	r.waitAlerts(t, 35, time.Minute)
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	r.stop(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   int64
	}{
		{"flowpipeline_inserter_alerts_stored_total", nil, 35},
		{"flowpipeline_inserter_alerts_already_stored_total", nil, 25},
		{"flowpipeline_inserter_alerts_invalid_total", []string{"reason", ReasonBadMessage}, 1},
		{"flowpipeline_inserter_alerts_invalid_total", []string{"reason", ReasonInvalidField}, 2},
		{"flowpipeline_inserter_alerts_invalid_total", []string{"reason", ReasonOutOfRange}, 0},
	} {
		if got := metric(t, r.reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.labels, got, c.want)
		}
	}

	// More alerts, and five old ones sent again.
	second := testAttackAlerts(20, 10)
	values, keys = alertRecords(t, append(append([]detector.Alert{}, second...), first[40:45]...))
	produceAlerts(t, k, alertsTopic, values, keys)
	r = start(t, cfg)
	r.waitAlerts(t, 30, time.Minute)
	time.Sleep(500 * time.Millisecond)
	r.stop(t)
	if got := metric(t, r.reg, "flowpipeline_inserter_alerts_already_stored_total"); got != 5 {
		t.Errorf("the restarted inserter found %d alerts already stored, want the 5 sent again (it must resume after the committed offsets)", got)
	}

	want := append(first, second...)
	got := storedAlerts(t, dsn)
	if len(got) != len(want) {
		t.Fatalf("alerts holds %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d:\n got  %+v\n want %+v", i, got[i], want[i])
		}
	}
}
