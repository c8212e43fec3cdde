package pgsink

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// alertsDDL is the alerts table: one row per event (start, update, end)
// of an attack the detector reported on the alerts topic, columns named as
// the JSON keys. The primary key is the event's identity, so storing a
// record again (a redelivery after a crash) changes nothing: see
// StoreAlerts. at is stored to the microsecond (timestamptz).
var alertsDDL = []string{
	`CREATE TABLE IF NOT EXISTS alerts (
  at timestamptz NOT NULL,
  event text NOT NULL CHECK (event IN ('start', 'update', 'end')),
  id text NOT NULL,
  target text NOT NULL,
  target_net text NOT NULL DEFAULT '',
  vector text NOT NULL,
  bps bigint NOT NULL,
  pps bigint NOT NULL,
  flows bigint NOT NULL,
  top_src_addr text[] NOT NULL,
  top_src_as bigint[] NOT NULL,
  top_src_country text[] NOT NULL,
  exporters text[] NOT NULL,
  started timestamptz,
  peak_bps bigint NOT NULL DEFAULT 0,
  peak_pps bigint NOT NULL DEFAULT 0,
  peak_flows bigint NOT NULL DEFAULT 0,
  duration_s double precision NOT NULL DEFAULT 0,
  stored_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (id, event, at)
)`,
	// The dashboards read alerts by time.
	"CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at)",
}

// Alert is one record of the detector's alerts topic, as JSON: the same
// keys and types as detector.Alert (inserter's TestAlertMatchesDetector
// keeps them equal). A copy rather than an import: the detector's tests
// use this package's helpers.
type Alert struct {
	Event         string    `json:"event"`
	ID            string    `json:"id"`
	Target        string    `json:"target"`
	TargetNet     string    `json:"target_net"`
	Vector        string    `json:"vector"`
	At            time.Time `json:"at"`
	Bps           uint64    `json:"bps"`
	Pps           uint64    `json:"pps"`
	Flows         uint64    `json:"flows"`
	TopSrcAddr    []string  `json:"top_src_addr"`
	TopSrcAS      []uint32  `json:"top_src_as"`
	TopSrcCountry []string  `json:"top_src_country"`
	Exporters     []string  `json:"exporters"`
	Started       string    `json:"started"`
	PeakBps       uint64    `json:"peak_bps,omitempty"`
	PeakPps       uint64    `json:"peak_pps,omitempty"`
	PeakFlows     uint64    `json:"peak_flows,omitempty"`
	DurationS     float64   `json:"duration_s,omitempty"`
}

// AlertsOf converts alerts of another type with the same JSON (the
// detector's) through their JSON, as the alerts topic carries them.
func AlertsOf(alerts any) ([]Alert, error) {
	b, err := json.Marshal(alerts)
	if err != nil {
		return nil, fmt.Errorf("encode the alerts as JSON: %w", err)
	}
	var out []Alert
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode the alerts' JSON: %w", err)
	}
	return out, nil
}

// Events of an alert.
const (
	alertStart  = "start"
	alertUpdate = "update"
	alertEnd    = "end"
)

// Bounds of a stored alert, so a broken or hostile record cannot bloat a
// row or overflow a column.
const (
	maxAlertText = 200 // bytes, per text and per list element
	maxAlertList = 100 // elements per list (the detector sends at most 5)
)

// ValidateAlert checks that a can be stored as it is, and names the field
// at fault when it cannot: errors wrap ErrOutOfRange for a text, a list or
// a figure above its bound; any other is a field that cannot be stored.
func ValidateAlert(a *Alert) error {
	bad := func(outOfRange bool, format string, args ...any) error {
		if outOfRange {
			return fmt.Errorf("alert: %w: %s", ErrOutOfRange, fmt.Sprintf(format, args...))
		}
		return fmt.Errorf("alert: %s", fmt.Sprintf(format, args...))
	}
	switch a.Event {
	case alertStart, alertUpdate, alertEnd:
	default:
		return bad(false, "event %q is not start, update or end", a.Event)
	}
	if a.At.IsZero() {
		return bad(false, "at is missing")
	}
	for _, f := range []struct {
		name, v  string
		required bool
	}{{"id", a.ID, true}, {"target", a.Target, true}, {"target_net", a.TargetNet, false}, {"vector", a.Vector, true}} {
		if f.required && f.v == "" {
			return bad(false, "%s is empty", f.name)
		}
		if err := alertText(f.name, f.v); err != nil {
			return err
		}
	}
	for _, l := range []struct {
		name string
		v    []string
	}{{"top_src_addr", a.TopSrcAddr}, {"top_src_country", a.TopSrcCountry}, {"exporters", a.Exporters}} {
		if len(l.v) > maxAlertList {
			return bad(true, "%s has %d elements, more than %d", l.name, len(l.v), maxAlertList)
		}
		for _, v := range l.v {
			if err := alertText(l.name, v); err != nil {
				return err
			}
		}
	}
	if len(a.TopSrcAS) > maxAlertList {
		return bad(true, "top_src_as has %d elements, more than %d", len(a.TopSrcAS), maxAlertList)
	}
	for _, n := range []struct {
		name string
		v    uint64
	}{{"bps", a.Bps}, {"pps", a.Pps}, {"flows", a.Flows}, {"peak_bps", a.PeakBps}, {"peak_pps", a.PeakPps}, {"peak_flows", a.PeakFlows}} {
		if n.v > math.MaxInt64 {
			return bad(true, "%s %d is above 2^63-1", n.name, n.v)
		}
	}
	if math.IsNaN(a.DurationS) || math.IsInf(a.DurationS, 0) || a.DurationS < 0 {
		return bad(true, "duration_s %v is not a duration in seconds", a.DurationS)
	}
	if a.Started != "" {
		if _, err := time.Parse(time.RFC3339Nano, a.Started); err != nil {
			return bad(false, "started %q is not an RFC3339 time", a.Started)
		}
	}
	return nil
}

func alertText(name, v string) error {
	if len(v) > maxAlertText {
		return fmt.Errorf("alert: %w: %s is %d bytes, more than %d", ErrOutOfRange, name, len(v), maxAlertText)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("alert: %s holds a NUL byte (PostgreSQL text cannot store it)", name)
	}
	return nil
}

// StoreAlerts stores alerts (each checked by ValidateAlert) in one
// transaction and returns how many were new. An alert already stored (same
// id, event and at) is left as it is: the alerts consumer commits its Kafka
// offsets after this returns, so a crash in between delivers the records
// again, and the key makes the second delivery a no-op — each alert is
// stored exactly once without keeping offsets in PostgreSQL.
func (s *Sink) StoreAlerts(ctx context.Context, alerts []Alert) (int64, error) {
	var stored int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		var b pgx.Batch
		for i := range alerts {
			a := &alerts[i]
			var started *time.Time
			if a.Started != "" {
				t, _ := time.Parse(time.RFC3339Nano, a.Started) // checked by ValidateAlert
				started = &t
			}
			as := make([]int64, len(a.TopSrcAS))
			for j, v := range a.TopSrcAS {
				as[j] = int64(v)
			}
			b.Queue(`INSERT INTO alerts (at, event, id, target, target_net, vector, bps, pps, flows,
  top_src_addr, top_src_as, top_src_country, exporters, started, peak_bps, peak_pps, peak_flows, duration_s)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (id, event, at) DO NOTHING`,
				a.At, a.Event, a.ID, a.Target, a.TargetNet, a.Vector, int64(a.Bps), int64(a.Pps), int64(a.Flows),
				nonNil(a.TopSrcAddr), as, nonNil(a.TopSrcCountry), nonNil(a.Exporters), started,
				int64(a.PeakBps), int64(a.PeakPps), int64(a.PeakFlows), a.DurationS).
				Exec(func(ct pgconn.CommandTag) error { stored += ct.RowsAffected(); return nil })
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return 0, opErr("alerts", err)
	}
	return stored, nil
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
