package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
)

// ExampleQueries are printed at start for psql; the tests run them
// against the demo's schema.
var ExampleQueries = []struct{ Title, SQL string }{
	// Complete minutes only: the current one, divided by 60, would read
	// far below the live view.
	{"flows and traffic per complete minute (bytes scaled by the sampling rate)",
		"SELECT date_trunc('minute', time_received) AS minute, count(*) AS flows, sum(bytes_scaled) * 8 / 60 AS bits_per_s FROM flows_scaled WHERE time_received >= date_trunc('minute', now()) - interval '10 minutes' AND time_received < date_trunc('minute', now()) GROUP BY 1 ORDER BY 1;"},
	{"top source AS names and countries of the last 5 minutes",
		"SELECT src_as_name, src_country, sum(bytes * greatest(sampling_rate, 1)) AS bytes FROM flows WHERE time_received > now() - interval '5 minutes' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10;"},
	{"top talkers of the last 5 minutes",
		"SELECT src_addr, dst_addr, sum(bytes_scaled) AS bytes, count(*) AS flows FROM flows_scaled WHERE time_received > now() - interval '5 minutes' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10;"},
	{"AS pairs from the 5-minute rollup (bytes scaled by the sampling rate)",
		"SELECT timeslot, src_as, dst_as, sum(flows) AS flows, sum(bytes) AS bytes FROM flows_5m GROUP BY 1, 2, 3 ORDER BY 1 DESC, 5 DESC LIMIT 10;"},
}

// view prints the demo's state, read back from PostgreSQL.
type view struct {
	out      io.Writer
	live     bool // redraw in place
	window   time.Duration
	stored   func() uint64 // flows the inserter committed this run
	start    time.Time
	brokers  []string
	embedded bool
	dsn      string
	pg       *pgserver.Server
	topic    string   // the mocker's
	enriched string   // the enricher's output, the inserter's input
	files    []string // the enricher's data files
	alerts   string   // the detector's output topic
	active   func() []detector.Alert

	failed     bool // a query failed; said once
	lines      int  // lines of the last live frame, to move back over
	refreshes  int
	lastStored uint64
	lastT      time.Time
}

func (v *view) header(rowsBefore uint64, rate float64) {
	w := v.out
	kafka := "Kafka at " + strings.Join(v.brokers, ",")
	if v.embedded {
		kafka = "in-process Kafka broker on " + strings.Join(v.brokers, ",")
	}
	where := "PostgreSQL"
	if v.pg != nil {
		where = fmt.Sprintf("private PostgreSQL on 127.0.0.1:%d", v.pg.Port())
	}
	fmt.Fprintf(w, "\nflow-pipeline demo: mocker (%s flows/s) -> %s (topic %s) -> enricher -> topic %s -> inserter -> %s\n",
		humanCount(rate), kafka, v.topic, v.enriched, where)
	fmt.Fprintf(w, "The detector reads topic %s and writes its alerts to topic %s, which the inserter stores in the alerts table.\n", v.enriched, v.alerts)
	if len(v.files) > 0 {
		fmt.Fprintf(w, "The enricher reads %s.\n", strings.Join(v.files, ", "))
	} else {
		fmt.Fprintf(w, "The enricher has no data file: the flows are stored with empty enrichment fields.\n")
	}
	if rowsBefore > 0 {
		// -reset only applies to the private server's data.
		hint := ""
		if v.pg != nil {
			hint = " (-reset starts afresh)"
		}
		fmt.Fprintf(w, "The flows table already holds %s rows from earlier runs%s; the counts below are this run's.\n", thousands(rowsBefore), hint)
	}
	dsn := v.dsn
	if v.pg != nil {
		dsn = strings.TrimSuffix(dsn, "?sslmode=disable")
	}
	fmt.Fprintf(w, "\nConnect while it runs:\n  psql %q\n", dsn)
	if _, err := exec.LookPath("psql"); err != nil {
		fmt.Fprintf(w, "  (psql is not on PATH: apt-get install postgresql-client)\n")
	}
	fmt.Fprintf(w, "and try:\n")
	for _, q := range ExampleQueries {
		fmt.Fprintf(w, "  -- %s\n  %s\n", q.Title, q.SQL)
	}
	fmt.Fprintln(w)
}

type talker struct {
	name  string
	bytes int64
	flows int64
}

type snapshot struct {
	stored      uint64 // flows this run committed, as the inserter counts
	windowFlows int64
	windowBytes int64
	since       time.Time
	lists       [][]talker // one per topLists entry
}

// label names one side of a flow: its network (customer) name, else its
// AS name, else its AS number; then its country code, when known.
func label(side string) string {
	return fmt.Sprintf(`coalesce(nullif(%[1]s_net_name, ''), nullif(%[1]s_as_name, ''), 'AS' || %[1]s_as) || coalesce(' [' || nullif(%[1]s_country, '') || ']', '')`, side)
}

// topLists are the view's top lists by scaled bytes over the window ($1):
// title and the SQL of the name column. They read flows rather than
// flows_scaled, whose SELECT * was expanded before the enrichment columns
// existed in a database created by an older inserter.
var topLists = []struct{ Title, Name string }{
	{"Top talkers (network or AS name [country])", label("src") + " || ' -> ' || " + label("dst")},
	{"Top source AS by name", `coalesce(nullif(src_as_name, ''), '(unnamed)') || ' AS' || src_as`},
	{"Top countries (source -> destination)", `coalesce(nullif(src_country, ''), '??') || ' -> ' || coalesce(nullif(dst_country, ''), '??')`},
	{"Top customers (network name, site)", `coalesce(nullif(dst_net_name, ''), nullif(src_net_name, ''), '(no network)') || coalesce(' (' || nullif(coalesce(nullif(dst_net_site, ''), src_net_site), '') || ')', '')`},
}

// topSQL is the query of one top list. It groups by the label itself, so
// one label is one line even when the columns behind it differ (a customer
// as the source and as the destination of its flows).
func topSQL(name string) string {
	return "SELECT " + name + ", sum(bytes * greatest(sampling_rate, 1))::bigint AS b, count(*) FROM flows\nWHERE time_received >= $1 GROUP BY 1 ORDER BY b DESC LIMIT 5"
}

// snapshot reads the state from PostgreSQL in one round trip. The top
// lists cover the last window of this run only.
func (v *view) snapshot(ctx context.Context, conn *pgx.Conn, now time.Time) (snapshot, error) {
	s := snapshot{since: now.Add(-v.window)}
	if s.since.Before(v.start) {
		s.since = v.start
	}
	// The inserter's own count: the offsets of a transactional topic also
	// count the transaction markers.
	if v.stored != nil {
		s.stored = v.stored()
	}
	var b pgx.Batch
	b.Queue("SELECT count(*), coalesce(sum(bytes_scaled), 0)::bigint FROM flows_scaled WHERE time_received >= $1", s.since).QueryRow(func(r pgx.Row) error {
		return r.Scan(&s.windowFlows, &s.windowBytes)
	})
	top := func(sql string, dst *[]talker) {
		b.Queue(sql, s.since).Query(func(rows pgx.Rows) error {
			var t talker
			_, err := pgx.ForEachRow(rows, []any{&t.name, &t.bytes, &t.flows}, func() error {
				*dst = append(*dst, t)
				return nil
			})
			return err
		})
	}
	// Bytes are scaled by the sampling rate. Separate queries beat one
	// GROUPING SETS scan here (BenchmarkSnapshot).
	s.lists = make([][]talker, len(topLists))
	for i, l := range topLists {
		top(topSQL(l.Name), &s.lists[i])
	}
	err := conn.SendBatch(ctx, &b).Close()
	return s, err
}

// refresh reads and prints one frame; final prints every block, below
// whatever came before.
func (v *view) refresh(ctx context.Context, conn *pgx.Conn, produced uint64, final bool) {
	now := time.Now()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := v.snapshot(qctx, conn, now)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// The progress line still shows (stored is the inserter's count);
		// the error once, not every refresh.
		if !v.failed {
			fmt.Fprintf(v.out, "reading the view from PostgreSQL failed: %v\n", err)
			v.failed = true
		}
		s = snapshot{since: now, stored: s.stored, lists: make([][]talker, len(topLists))}
		v.lines = 0
	}
	v.refreshes++
	rate := 0.0
	if !v.lastT.IsZero() && now.Sub(v.lastT) > 0 && s.stored >= v.lastStored {
		rate = float64(s.stored-v.lastStored) / now.Sub(v.lastT).Seconds()
	}
	v.lastStored, v.lastT = s.stored, now
	lag := int64(produced) - int64(s.stored)

	var b strings.Builder
	fmt.Fprintf(&b, "[%6.1fs] produced %s  stored %s  lag %s  %s flows/s  traffic %s",
		now.Sub(v.start).Seconds(), thousands(produced), thousands(s.stored), thousands(uint64(max(lag, 0))),
		humanCount(rate), humanBits(float64(s.windowBytes)*8/max(now.Sub(s.since).Seconds(), 1)))
	b.WriteByte('\n')
	var active []detector.Alert
	if v.active != nil {
		active = v.active()
	}
	if v.live || final || len(active) > 0 {
		writeAttacks(&b, active)
	}
	if v.live || final || v.refreshes%5 == 0 {
		span := now.Sub(s.since).Round(time.Second)
		b.WriteByte('\n')
		for i, l := range topLists {
			fmt.Fprintf(&b, "%s, by bytes scaled by the sampling rate (last %s)\n", l.Title, span)
			writeTop(&b, s.lists[i], s.windowBytes)
		}
		b.WriteByte('\n')
	}
	frame := b.String()
	if v.live && !final && v.lines > 0 {
		// Back to the first line of the previous frame, and clear below.
		fmt.Fprintf(v.out, "\x1b[%dA\r\x1b[J", v.lines)
	}
	io.WriteString(v.out, frame)
	v.lines = strings.Count(frame, "\n")
	if final {
		v.lines = 0
	}
}

// writeAttacks lists the attacks the detector reports in progress, by
// event time: vector, target and network, since when, the rates of the
// last closed step and the heaviest source AS.
func writeAttacks(b *strings.Builder, active []detector.Alert) {
	if len(active) == 0 {
		b.WriteString("Attacks in progress: none\n")
		return
	}
	fmt.Fprintf(b, "Attacks in progress: %d\n", len(active))
	for _, a := range active {
		target := a.Target
		if a.TargetNet != "" && a.TargetNet != a.Target {
			target += " (" + a.TargetNet + ")"
		}
		since := a.Started
		if t, err := time.Parse(time.RFC3339Nano, a.Started); err == nil {
			since = t.Local().Format("15:04:05")
		}
		var from []string
		for _, as := range a.TopSrcAS {
			from = append(from, "AS"+strconv.FormatUint(uint64(as), 10))
		}
		line := fmt.Sprintf("  ATTACK %s on %s since %s: %s packets/s, %s", a.Vector, target, since,
			humanCount(float64(a.Pps)), humanBits(float64(a.Bps)))
		if len(from) > 0 {
			line += ", from " + strings.Join(from[:min(len(from), 3)], " ")
		}
		b.WriteString(line + "\n")
	}
}

func writeTop(b *strings.Builder, ts []talker, total int64) {
	if len(ts) == 0 {
		b.WriteString("  (nothing stored yet)\n")
		return
	}
	for i, t := range ts {
		share := 0.0
		if total > 0 {
			share = 100 * float64(t.bytes) / float64(total)
		}
		fmt.Fprintf(b, "  %d  %-48s %10s %6.1f%%  %8s flows\n", i+1, t.name, humanBytes(float64(t.bytes)), share, thousands(uint64(t.flows)))
	}
}

// drain waits until the inserter has stored every produced flow, or
// timeout.
func (v *view) drain(produced uint64, timeout time.Duration, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	printed := false
	for {
		stored := v.stored()
		if stored >= produced {
			return
		}
		if !printed {
			fmt.Fprintf(v.out, "stopping: the mocker stopped at %s flows; waiting up to %s for the inserter to store the rest...\n", thousands(produced), timeout)
			v.lines = 0
			printed = true
		}
		select {
		case <-ctx.Done():
			logger.Warn("the inserter did not store every produced flow in time", "produced", produced, "stored", stored, "timeout", timeout)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (v *view) final(sum Summary) {
	fmt.Fprintf(v.out, "%s\n", sum)
	fmt.Fprintf(v.out, "(%s; the inserter committed %d; the flows table holds %s rows in all)\n",
		sum.Elapsed.Round(100*time.Millisecond), sum.Committed, thousands(sum.TotalRows))
	if v.pg != nil {
		fmt.Fprintf(v.out, "The data stays in %s for the next run (-reset starts afresh).\n", v.pg.DataDir())
	}
}

// thousands formats n with comma separators: 1,234,567.
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func scaled(v float64, units []string) string {
	i := 0
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f%s", v, units[0])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

// humanCount: 950, 12.3k, 4.5M.
func humanCount(v float64) string { return scaled(v, []string{"", "k", "M", "G", "T"}) }

// humanBytes: decimal units, as link speeds are.
func humanBytes(v float64) string {
	return scaled(v, []string{" B", " kB", " MB", " GB", " TB", " PB"})
}

func humanBits(v float64) string {
	return scaled(v, []string{" bit/s", " kbit/s", " Mbit/s", " Gbit/s", " Tbit/s"})
}
