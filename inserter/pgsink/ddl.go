package pgsink

// DDL on the partitioned flows table, written so that it never freezes the
// writers behind a long reader (a Grafana query holding flows):
//
//   - every DDL transaction sets a short lock_timeout and is retried with
//     backoff when it expires, so a DDL statement never sits in the lock
//     queue in front of the writers for long;
//   - a daily partition is created as a plain table and then attached,
//     which takes SHARE UPDATE EXCLUSIVE on flows (compatible with readers
//     and writers) instead of the ACCESS EXCLUSIVE of CREATE TABLE ...
//     PARTITION OF;
//   - retention detaches a partition CONCURRENTLY before dropping it;
//   - the schema is only changed where the catalog says it must be.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// partitionsPerTx bounds the partitions one transaction creates: each
	// holds several locks until commit, and the lock table is small
	// (max_locks_per_transaction, 64 per connection by default).
	partitionsPerTx = 64
	// ddlAttempts is how often one call retries a DDL transaction that hit
	// lock_timeout before it returns the error; its caller (the writer,
	// the maintenance loop) retries again later.
	ddlAttempts = 5
	// writeLockTimeoutSQL is the data transaction's lock_timeout.
	writeLockTimeoutSQL = "SET LOCAL lock_timeout = '5s'"
)

// IsLockTimeout reports whether err is a lock wait cut short by
// lock_timeout (SQLSTATE 55P03) or a deadlock (40P01): the statement did
// nothing and can be retried.
func IsLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "40P01")
}

// ErrBusy means retention left a partition alone because another
// transaction (a long reader) holds a lock on it; it is retried later.
var ErrBusy = errors.New("another transaction holds a lock on the partition")

// busy reports the first other backend holding a lock on rel. Retention
// checks it before each statement that would wait for such a reader: a
// DETACH or DROP waiting for ACCESS EXCLUSIVE on the partition would hold
// up every new query on it until lock_timeout, and a DETACH CONCURRENTLY
// cut short leaves a pending detach behind.
func busy(ctx context.Context, c *pgx.Conn, rel string) error {
	var pid int32
	err := c.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'relation' AND relation = to_regclass($1)
  AND pid <> pg_backend_pid() LIMIT 1`, rel).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s: backend %d: %w", rel, pid, ErrBusy)
}

func (s *Sink) lockTimeoutSQL(local bool) string {
	scope := ""
	if local {
		scope = "LOCAL "
	}
	return fmt.Sprintf("SET %slock_timeout = %d", scope, s.cfg.LockTimeout.Milliseconds())
}

// retryLocks runs fn until it succeeds, fails with anything but a lock
// timeout, or has hit the lock timeout ddlAttempts times.
func (s *Sink) retryLocks(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !IsLockTimeout(err) || ctx.Err() != nil {
			return err
		}
		if attempt == ddlAttempts {
			return fmt.Errorf("%s waited longer than lock_timeout (%s) %d times; a long transaction holds a conflicting lock, it will be retried later: %w",
				what, s.cfg.LockTimeout, attempt, err)
		}
		s.logger.Info("DDL gave way to a conflicting lock; retrying", "ddl", what, "attempt", attempt, "retry_in", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// ddlTx runs fn in a transaction with a short lock_timeout, holding the
// advisory lock that serializes DDL between inserters, retried when a lock
// wait times out.
func (s *Sink) ddlTx(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	return s.retryLocks(ctx, what, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// Waiting for the advisory lock holds no lock on any table, so
			// it needs no timeout: another inserter's DDL is itself bounded.
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, s.lockTimeoutSQL(true)); err != nil {
				return err
			}
			return fn(tx)
		})
	})
}

// CreateSchema creates the tables, index and view where they are missing.
// It is idempotent and safe with several inserters starting at once. On an
// existing schema it runs no statement that locks flows more strongly than
// ACCESS SHARE, so a start never waits behind a long reader or freezes
// the writers of other inserters.
func (s *Sink) CreateSchema(ctx context.Context) error {
	err := s.ddlTx(ctx, "schema", func(tx pgx.Tx) error {
		for _, stmt := range ddl() {
			need, err := stmtNeeded(ctx, tx, stmt)
			if err != nil {
				return fmt.Errorf("check whether %q must run: %w", firstLine(stmt), err)
			}
			if !need {
				continue
			}
			if name, ok := viewName(stmt); ok {
				// CREATE OR REPLACE VIEW can only append columns; flows_scaled
				// selects flows.* before its own, so a column added to flows
				// needs the view dropped and created again, in this
				// transaction (readers of the view wait, under lock_timeout).
				if _, err := tx.Exec(ctx, "DROP VIEW IF EXISTS "+name); err != nil {
					return fmt.Errorf("drop view %s to recreate it: %w", name, err)
				}
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", firstLine(stmt), err)
			}
			if strings.HasPrefix(stmt, "CREATE TABLE IF NOT EXISTS flows_5m_enriched ") {
				// A new rollup starts equal to the rows already stored (none on
				// a new database; on an upgrade, the earlier release's rows
				// with default dimensions): a one-time scan of flows, which
				// retention bounds, committed with the table.
				if _, err := tx.Exec(ctx, "INSERT INTO flows_5m_enriched "+EnrichedRollupSQL); err != nil {
					return fmt.Errorf("fill flows_5m_enriched from flows: %w", err)
				}
			}
		}
		migrated, err := migrateRollup(ctx, tx)
		if migrated {
			s.logger.Warn("migrated flows_5m to scaled numeric sums, rebuilt from flows")
		}
		return err
	})
	return opErr("schema", err)
}

// viewName is the view a CREATE OR REPLACE VIEW statement creates.
func viewName(stmt string) (string, bool) {
	words := strings.Fields(stmt)
	if len(words) > 5 && strings.EqualFold(strings.Join(words[:4], " "), "CREATE OR REPLACE VIEW") {
		return words[4], true
	}
	return "", false
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// stmtNeeded looks a DDL statement's object up in the catalog and says
// whether running it would change anything. Statements it does not
// recognize always run (under lock_timeout).
func stmtNeeded(ctx context.Context, tx pgx.Tx, stmt string) (bool, error) {
	words := strings.Fields(stmt)
	upper := func(n int) string {
		return strings.ToUpper(strings.Join(words[:min(n, len(words))], " "))
	}
	exists := func(name string) (bool, error) {
		var ok bool
		err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&ok)
		return ok, err
	}
	switch {
	case upper(5) == "CREATE TABLE IF NOT EXISTS" && len(words) > 5:
		ok, err := exists(strings.TrimSuffix(words[5], "("))
		return !ok, err
	case upper(5) == "CREATE INDEX IF NOT EXISTS" && len(words) > 5:
		// CREATE INDEX IF NOT EXISTS takes SHARE on flows and all its
		// partitions before it checks the name: it would wait for every
		// writer and block new ones.
		ok, err := exists(words[5])
		return !ok, err
	case upper(2) == "ALTER TABLE" && len(words) > 8 && strings.EqualFold(strings.Join(words[3:8], " "), "ADD COLUMN IF NOT EXISTS"):
		// ADD COLUMN IF NOT EXISTS takes ACCESS EXCLUSIVE on the table
		// before it checks: only run it when the column is missing.
		var missing bool
		err := tx.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM pg_attribute
WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`, words[2], words[8]).Scan(&missing)
		return missing, err
	case upper(4) == "CREATE OR REPLACE VIEW" && len(words) > 6 && strings.EqualFold(words[5], "AS"):
		return viewDiffers(ctx, tx, words[4], stmt)
	case upper(3) == "COMMENT ON COLUMN" && len(words) > 5 && strings.EqualFold(words[4], "IS"):
		table, col, ok := strings.Cut(words[3], ".")
		text, tok := sqlLiteral(stmt)
		if !ok || !tok {
			return true, nil
		}
		var differs bool
		err := tx.QueryRow(ctx, `SELECT col_description(a.attrelid, a.attnum) IS DISTINCT FROM $3
FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2`, table, col, text).Scan(&differs)
		if errors.Is(err, pgx.ErrNoRows) {
			return true, nil // let the statement report the missing column
		}
		return differs, err
	case upper(3) == "COMMENT ON TABLE" && len(words) > 5 && strings.EqualFold(words[4], "IS"):
		text, ok := sqlLiteral(stmt)
		if !ok {
			return true, nil
		}
		var differs bool
		err := tx.QueryRow(ctx, "SELECT obj_description(to_regclass($1), 'pg_class') IS DISTINCT FROM $2", words[3], text).Scan(&differs)
		return differs, err
	}
	return true, nil
}

// viewDiffers reports whether the view is missing or defined differently
// from stmt (CREATE OR REPLACE VIEW name AS query): CREATE OR REPLACE VIEW
// takes ACCESS EXCLUSIVE on the view, so it waits for, and then blocks,
// every dashboard query on it. The new definition is compared as
// PostgreSQL deparses it, through a temporary view that is rolled back.
func viewDiffers(ctx context.Context, tx pgx.Tx, name, stmt string) (bool, error) {
	var current *string
	if err := tx.QueryRow(ctx, "SELECT pg_get_viewdef(to_regclass($1))", name).Scan(&current); err != nil {
		return false, err
	}
	if current == nil {
		return true, nil
	}
	i := strings.Index(strings.ToUpper(stmt), " AS")
	query := stmt[i+len(" AS"):]
	sp, err := tx.Begin(ctx) // a savepoint
	if err != nil {
		return false, err
	}
	defer sp.Rollback(ctx)
	if _, err := sp.Exec(ctx, "CREATE TEMPORARY VIEW flowpipeline_view_check AS"+query); err != nil {
		return true, nil // the statement itself will report what is wrong
	}
	var want string
	if err := sp.QueryRow(ctx, "SELECT pg_get_viewdef('pg_temp.flowpipeline_view_check'::regclass)").Scan(&want); err != nil {
		return false, err
	}
	return want != *current, nil
}

// sqlLiteral returns the last single-quoted string literal of stmt.
func sqlLiteral(stmt string) (string, bool) {
	stmt = strings.TrimSpace(stmt)
	if !strings.HasSuffix(stmt, "'") {
		return "", false
	}
	body := stmt[:len(stmt)-1]
	for i := len(body) - 1; i >= 0; i-- {
		if body[i] != '\'' {
			continue
		}
		if i > 0 && body[i-1] == '\'' {
			i-- // an escaped quote
			continue
		}
		return strings.ReplaceAll(body[i+1:], "''", "'"), true
	}
	return "", false
}

func partitionName(day time.Time) string { return "flows_p" + day.Format("20060102") }

// partitionDay parses a partition name; ok is false for a table that is
// not one of ours.
func partitionDay(name string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(name, "flows_p")
	if !ok || len(rest) != 8 {
		return time.Time{}, false
	}
	day, err := time.Parse("20060102", rest)
	return day, err == nil
}

// EnsurePartitions creates the daily partitions of flows for days (UTC
// midnights) that do not exist yet, in transactions of at most 64
// partitions. The maintenance loop calls it for today and tomorrow, so the
// writers normally find their partition ready.
func (s *Sink) EnsurePartitions(ctx context.Context, days []time.Time) error {
	return s.ensurePartitions(ctx, days)
}

// ensurePartitions creates the daily partitions the batch needs before the
// data transaction, so COPY never meets a missing partition and the data
// transaction takes no DDL lock.
func (s *Sink) ensurePartitions(ctx context.Context, days []time.Time) error {
	s.mu.Lock()
	var missing []time.Time
	for _, d := range days {
		if !s.partitions[d.Unix()] {
			missing = append(missing, d.UTC())
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	slices.SortFunc(missing, time.Time.Compare)
	missing = slices.Compact(missing)
	for group := range slices.Chunk(missing, partitionsPerTx) {
		what := fmt.Sprintf("creating partitions %s to %s", partitionName(group[0]), partitionName(group[len(group)-1]))
		err := s.ddlTx(ctx, what, func(tx pgx.Tx) error { return createPartitions(ctx, tx, group) })
		if err != nil {
			return opErr("partition", err)
		}
		s.mu.Lock()
		for _, d := range group {
			s.partitions[d.Unix()] = true
		}
		s.mu.Unlock()
	}
	return nil
}

// createPartitions creates and attaches the partitions of days that are
// missing. CREATE TABLE ... (LIKE flows) takes ACCESS SHARE on flows, and
// ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE: neither conflicts with
// the writers' ROW EXCLUSIVE nor with readers. The CHECK constraint
// matching the range lets ATTACH skip its validation scan; it is dropped
// once the partition constraint holds the same rule.
func createPartitions(ctx context.Context, tx pgx.Tx, days []time.Time) error {
	names := make([]string, len(days))
	for i, d := range days {
		names[i] = partitionName(d)
	}
	// Under the advisory lock: what exists now is final for this group.
	rows, err := tx.Query(ctx, `SELECT n, to_regclass(n) IS NOT NULL,
  EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = to_regclass(n) AND i.inhparent = 'flows'::regclass)
FROM unnest($1::text[]) AS n`, names)
	if err != nil {
		return fmt.Errorf("look up partitions: %w", err)
	}
	type state struct{ exists, attached bool }
	have := map[string]state{}
	var name string
	var st state
	if _, err := pgx.ForEachRow(rows, []any{&name, &st.exists, &st.attached}, func() error {
		have[name] = st
		return nil
	}); err != nil {
		return fmt.Errorf("look up partitions: %w", err)
	}
	var sql strings.Builder
	for i, d := range days {
		st := have[names[i]]
		if st.attached {
			continue
		}
		ident := pgx.Identifier{names[i]}.Sanitize()
		from, to := d.Format(time.RFC3339), d.AddDate(0, 0, 1).Format(time.RFC3339)
		check := pgx.Identifier{names[i] + "_range"}.Sanitize()
		if !st.exists {
			fmt.Fprintf(&sql, "CREATE TABLE %s (LIKE flows INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT %s CHECK (time_received >= '%s' AND time_received < '%s'));\n",
				ident, check, from, to)
		}
		// A table left unattached (by hand, or a retention that detached
		// but did not drop it) is attached again, with a scan if needed.
		fmt.Fprintf(&sql, "ALTER TABLE flows ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s');\n", ident, from, to)
		if !st.exists {
			fmt.Fprintf(&sql, "ALTER TABLE %s DROP CONSTRAINT %s;\n", ident, check)
		}
	}
	if sql.Len() == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, sql.String()); err != nil {
		return fmt.Errorf("create partitions %s to %s: %w", names[0], names[len(names)-1], err)
	}
	return nil
}

func (s *Sink) forgetPartitions() {
	s.mu.Lock()
	clear(s.partitions)
	s.mu.Unlock()
}

// serverVersion is the server's server_version_num, read once.
func (s *Sink) serverVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	s.mu.Lock()
	v := s.version
	s.mu.Unlock()
	if v != 0 {
		return v, nil
	}
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&v); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
	return v, nil
}

// DropExpired drops the daily partitions of flows that end at or before
// cutoff, and the flows_5m rows of the days it no longer holds, so the
// rollup keeps matching the rows. It returns the partitions it dropped,
// also when it fails part way (the rest is retried on the next call).
//
// A partition another transaction holds a lock on (a long reader) is left
// for a later call (ErrBusy). Otherwise it is first detached CONCURRENTLY
// (PostgreSQL 14+): SHARE UPDATE EXCLUSIVE on flows, which neither readers
// nor writers conflict with, then a wait, holding no lock, for the
// transactions that still see the partition. That wait is bounded by
// lock_timeout: a detach cut short stays pending and is finished (DETACH
// ... FINALIZE) on a later call. The detached table is then dropped: no
// query on flows can see it any more.
func (s *Sink) DropExpired(ctx context.Context, cutoff time.Time) ([]string, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, opErr("connect", err)
	}
	defer conn.Release()
	c := conn.Conn()
	// DETACH CONCURRENTLY cannot run in a transaction block: use a session
	// advisory lock and session settings, both undone before the
	// connection goes back to the pool.
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", schemaLockKey); err != nil {
		return nil, opErr("retention", err)
	}
	defer c.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", schemaLockKey)
	if _, err := c.Exec(ctx, s.lockTimeoutSQL(false)); err != nil {
		return nil, opErr("retention", err)
	}
	defer c.Exec(context.WithoutCancel(ctx), "RESET lock_timeout")

	dropped, err := s.dropExpired(ctx, c, cutoff)
	if len(dropped) > 0 {
		s.forgetPartitions()
	}
	slices.Sort(dropped)
	return dropped, opErr("retention", err)
}

type partInfo struct {
	name     string
	day      time.Time
	attached bool // still a partition of flows (maybe pending detach)
	pending  bool // DETACH CONCURRENTLY started but not finished
}

func (s *Sink) dropExpired(ctx context.Context, c *pgx.Conn, cutoff time.Time) ([]string, error) {
	version, err := s.serverVersion(ctx, c)
	if err != nil {
		return nil, err
	}
	concurrent := version >= 140000 && !s.plainDetach
	pendingCol := "false"
	if version >= 140000 {
		pendingCol = "coalesce(i.inhdetachpending, false)"
	}
	var hasDefault bool
	if err := c.QueryRow(ctx, "SELECT partdefid <> 0 FROM pg_partitioned_table WHERE partrelid = 'flows'::regclass").Scan(&hasDefault); err != nil {
		return nil, fmt.Errorf("look up flows: %w", err)
	}
	concurrent = concurrent && !hasDefault // CONCURRENTLY refuses a table with a default partition
	// Our partitions, attached or left detached by an interrupted run.
	rows, err := c.Query(ctx, `SELECT c.relname::text, i.inhrelid IS NOT NULL, `+pendingCol+`
FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'flows'::regclass
WHERE c.relkind = 'r' AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'flows'::regclass)
  AND c.relname ~ '^flows_p[0-9]{8}$'`)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	var parts []partInfo
	var p partInfo
	if _, err := pgx.ForEachRow(rows, []any{&p.name, &p.attached, &p.pending}, func() error {
		if day, ok := partitionDay(p.name); ok {
			p.day = day
			parts = append(parts, p)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	slices.SortFunc(parts, func(a, b partInfo) int { return a.day.Compare(b.day) })

	var dropped []string
	gone := map[string]bool{} // detached from flows during this run
	// keepFrom is where flows_5m must stay: the start of the oldest
	// expired day still attached, or of the first day not expired.
	keepFrom := cutoff.UTC().Truncate(24 * time.Hour)
	var firstErr error
	for _, p := range parts {
		ident := pgx.Identifier{p.name}.Sanitize()
		expired := !p.day.AddDate(0, 0, 1).After(cutoff)
		if p.pending || expired {
			if err := busy(ctx, c, p.name); err != nil {
				firstErr = err
				break
			}
		}
		if p.pending {
			// Only one partition may be pending detach at a time: finish it
			// first, expired or not (only retention starts a detach).
			if _, err := c.Exec(ctx, "ALTER TABLE flows DETACH PARTITION "+ident+" FINALIZE"); err != nil {
				firstErr = fmt.Errorf("finish detaching %s: %w", p.name, err)
				break
			}
			gone[p.name] = true
		}
		if expired {
			if p.attached && !gone[p.name] {
				stmt := "ALTER TABLE flows DETACH PARTITION " + ident
				if concurrent {
					stmt += " CONCURRENTLY"
				}
				if _, err := c.Exec(ctx, stmt); err != nil {
					firstErr = fmt.Errorf("detach %s: %w", p.name, err)
					break
				}
				gone[p.name] = true
			}
			if _, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+ident); err != nil {
				// Detached: no query on flows sees it any more; the next
				// run drops it.
				firstErr = fmt.Errorf("drop detached partition %s: %w", p.name, err)
				break
			}
			dropped = append(dropped, p.name)
		}
	}
	for _, p := range parts {
		if p.attached && !gone[p.name] && p.day.Before(keepFrom) {
			keepFrom = p.day
			break
		}
	}
	for _, rollup := range [...]string{"flows_5m", "flows_5m_enriched"} {
		if _, err := c.Exec(ctx, "DELETE FROM "+rollup+" WHERE timeslot < $1", keepFrom); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("delete expired %s rows: %w", rollup, err)
		}
	}
	if firstErr != nil && (IsLockTimeout(firstErr) || errors.Is(firstErr, ErrBusy)) {
		firstErr = fmt.Errorf("%w (a long transaction still reads flows; retention resumes on its next run)", firstErr)
	}
	return dropped, firstErr
}
