package pgsink

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// schemaLockKey serializes DDL (schema, partitions, retention) between
// inserters sharing a database; any constant works, this one spells "flowpipe".
const schemaLockKey int64 = 0x666c6f7770697065

// Config configures a Sink.
type Config struct {
	// DSN is a libpq connection string or URL.
	DSN string
	// Group is the Kafka consumer group: the first key of kafka_offsets.
	Group string
	// MaxConns bounds the connection pool (default 3): one per concurrent
	// Write plus one for DDL and retention.
	MaxConns int32
	// LockTimeout bounds how long a DDL statement (partition creation,
	// retention, schema) waits for a lock on flows before it gives up and
	// is retried (default 2s), so it never queues in front of the writers
	// for long behind a slow reader.
	LockTimeout time.Duration
	// Committed, if set, is called right after each transaction that
	// stored flows commits, with their time_received_ns (the batch's own
	// slice: read it before returning, do not keep it). The inserter's
	// latency histogram is observed there.
	Committed func(receivedNs []int64)
}

// Error is a failed database operation; Op ("connect", "schema",
// "partition", "write", "offsets", "retention") labels the error metric.
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string {
	// A missing database is the cause to read first: pgx lists it last,
	// after the TLS negotiation of every address it tried.
	var pe *pgconn.PgError
	if errors.As(e.Err, &pe) && pe.Code == "3D000" {
		return "postgres " + e.Op + ": " + pe.Message + ": create it (createdb) or fix the database name in the DSN; details: " + e.Err.Error()
	}
	return "postgres " + e.Op + ": " + e.Err.Error()
}
func (e *Error) Unwrap() error { return e.Err }

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Err: err}
}

// Sink stores batches in PostgreSQL. Its methods are safe for concurrent
// use; concurrent Writes of one partition's batches must be avoided by the
// caller (they would be refused with ErrGap, never stored twice).
type Sink struct {
	cfg    Config
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu         sync.Mutex
	partitions map[int64]bool // days known to have a partition
	version    int            // server_version_num, once known
	// plainDetach makes retention use DETACH without CONCURRENTLY, as on
	// PostgreSQL 13 and older (tests).
	plainDetach bool
}

// New prepares a Sink. It does not connect: call Ping or CreateSchema.
func New(cfg Config, logger *slog.Logger) (*Sink, error) {
	if cfg.Group == "" {
		return nil, errors.New("pgsink: the consumer group must not be empty; it keys the offsets table")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres DSN: %w; use a libpq string (host=... dbname=...) or a postgres:// URL", err)
	}
	pcfg.MaxConns = 3
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = 2 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	return &Sink{cfg: cfg, pool: pool, logger: logger, partitions: map[int64]bool{}}, nil
}

// Close closes the connections.
func (s *Sink) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Sink) Ping(ctx context.Context) error {
	return opErr("connect", s.pool.Ping(ctx))
}

// StoredOffsets returns the next offset to consume for each partition of
// topic that has one stored.
func (s *Sink) StoredOffsets(ctx context.Context, topic string) (map[int32]int64, error) {
	rows, err := s.pool.Query(ctx, "SELECT partition, next_offset FROM kafka_offsets WHERE consumer_group = $1 AND topic = $2", s.cfg.Group, topic)
	if err != nil {
		return nil, opErr("offsets", err)
	}
	out := map[int32]int64{}
	var p int32
	var off int64
	_, err = pgx.ForEachRow(rows, []any{&p, &off}, func() error {
		out[p] = off
		return nil
	})
	return out, opErr("offsets", err)
}

// SetStartOffsets records where this sink's consumer group starts reading
// topic, for partitions it has no offset stored for yet. The group then
// skips what the topic held before (the demo counts only its own run).
func (s *Sink) SetStartOffsets(ctx context.Context, topic string, offsets map[int32]int64) error {
	for p, off := range offsets {
		if _, err := s.pool.Exec(ctx, `INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, topic, partition) DO NOTHING`, s.cfg.Group, topic, p, off); err != nil {
			return opErr("offsets", fmt.Errorf("store the start offset of %s/%d for group %s: %w", topic, p, s.cfg.Group, err))
		}
	}
	return nil
}

// ErrGap means a batch does not continue from the stored offset: writing
// it would lose the records in between. The consumer must restart the
// partition from the stored offset; retrying the batch cannot help.
var ErrGap = errors.New("batch does not continue from the stored offset")

// Result says what Write stored.
type Result struct {
	// Flows is the number of rows inserted.
	Flows int
	// SkippedRecords counts records of the batch that were already stored
	// (their offset is below the stored next offset): a rebalance handed
	// the partition to this inserter while another still wrote it.
	SkippedRecords int
	// Done is how many records of the requested range are now stored (or
	// were already), counted from its start: on error, a retry can resume
	// there. It equals the range's length on success.
	Done int
}

func (r *Result) add(o Result) {
	r.Flows += o.Flows
	r.SkippedRecords += o.SkippedRecords
	r.Done += o.Done
}

var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")
var copyTrailer = []byte{0xff, 0xff}

// maxDaysPerWrite bounds the daily partitions one data transaction
// touches, so a batch spread over thousands of days (a replay, a router
// clock far off) does not run out of lock table space and fail forever.
const maxDaysPerWrite = 64

// Write stores the batch's flows, their rollup and the partition's next
// offset. Records below the stored offset are skipped, so a batch written
// twice, or by two inserters, lands once. It is WriteRecords over all the
// batch's records.
func (s *Sink) Write(ctx context.Context, b *Batch) (Result, error) {
	return s.WriteRecords(ctx, b, 0, len(b.records))
}

// WriteRecords stores records [lo, hi) of b, which must continue from the
// stored offset (records before lo stored or skipped). It uses one
// transaction per run of records touching at most maxDaysPerWrite days
// (usually one for the whole range); each stores its records' flows and
// rollup and the offset after them. On error, the transactions before it
// stay committed (Result.Done says how far) and the range can be retried
// as is: stored records are skipped.
func (s *Sink) WriteRecords(ctx context.Context, b *Batch, lo, hi int) (Result, error) {
	var res Result
	if lo >= hi {
		return res, nil
	}
	if err := s.ensurePartitions(ctx, b.Days()); err != nil {
		return res, err
	}
	for _, c := range b.splitByDays(lo, hi, maxDaysPerWrite) {
		r, err := s.write(ctx, b, c[0], c[1], false)
		if err != nil && IsContentError(err) {
			// 23514 is also "no partition found for row": retention may have
			// dropped a partition we still believed in. Recreate and retry
			// once before calling the content bad.
			days := b.daysIn(c[0], c[1])
			s.mu.Lock()
			for _, d := range days {
				delete(s.partitions, d.Unix())
			}
			s.mu.Unlock()
			if err = s.ensurePartitions(ctx, days); err == nil {
				r, err = s.write(ctx, b, c[0], c[1], false)
			}
		}
		if err != nil {
			if !IsContentError(err) {
				// A partition may have been dropped by retention since we cached it.
				s.forgetPartitions()
			}
			return res, err
		}
		res.add(r)
	}
	return res, nil
}

// SkipRecord stores the offset after record i without storing its flows:
// the caller rejected it (IsContentError), after copying it elsewhere.
// Record i must be next: the records before it are stored.
func (s *Sink) SkipRecord(ctx context.Context, b *Batch, i int) error {
	_, err := s.write(ctx, b, i, i+1, true)
	return err
}

// IsContentError reports whether err is PostgreSQL refusing the data
// itself (SQLSTATE class 22 data exception, 23 integrity constraint, 54
// program limit): writing the same rows again fails the same way, so the
// caller must isolate and reject them. Anything else (connection, 40
// serialization or deadlock, 53 resources, 55P03 lock timeout, 57 operator
// intervention) is transient and retried as is.
func IsContentError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// write stores records [lo, hi) of b (or, with skip, only the offset after
// them) in one transaction.
func (s *Sink) write(ctx context.Context, b *Batch, lo, hi int, skip bool) (Result, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return Result{}, opErr("connect", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Result{}, opErr("write", err)
	}
	defer tx.Rollback(context.Background())
	// Never wait long behind someone else's DDL on flows: fail, and the
	// writer retries the batch. Longer than LockTimeout because row locks
	// shared with other writers (offsets, flows_5m) are legitimate waits.
	if _, err := tx.Exec(ctx, writeLockTimeoutSQL); err != nil {
		return Result{}, opErr("write", err)
	}

	// Lock the partition's offset row for the whole transaction: a second
	// inserter writing the same partition waits here, then sees our offset.
	var stored int64
	var inserted bool
	err = tx.QueryRow(ctx, `INSERT INTO kafka_offsets (consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, 0)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = kafka_offsets.next_offset
RETURNING next_offset, xmax = 0`, s.cfg.Group, b.Topic, b.Partition).Scan(&stored, &inserted)
	if err != nil {
		return Result{}, opErr("offsets", fmt.Errorf("lock the offset of %s/%d: %w", b.Topic, b.Partition, err))
	}
	start := b.Start
	if lo > 0 {
		start = b.records[lo-1].offset + 1
	}
	if !inserted && start > stored {
		return Result{}, fmt.Errorf("%s/%d: batch starts at offset %d but PostgreSQL stores %d: %w", b.Topic, b.Partition, start, stored, ErrGap)
	}
	recs := b.records[lo:hi]
	first, _ := slices.BinarySearchFunc(recs, stored, func(r record, off int64) int { return cmp.Compare(r.offset, off) })
	res := Result{SkippedRecords: first, Done: len(recs)}
	if first == len(recs) {
		return res, nil // all already stored; rollback releases the lock
	}
	if first > 0 {
		s.logger.Warn("skipping records another inserter already stored", "topic", b.Topic, "partition", b.Partition, "records", first, "stored_next_offset", stored)
	} else if lo == 0 && recs[0].offset > stored+1 && stored > 0 {
		// One offset is a transaction marker (read_committed skips it): each
		// transaction of a transactional producer, such as the enricher,
		// leaves one. More is a real gap.
		s.logger.Warn("offset gap: records between the stored offset and this batch were not seen, probably deleted by Kafka retention",
			"topic", b.Topic, "partition", b.Partition, "stored_next_offset", stored, "batch_first_offset", recs[0].offset)
	}
	rowPos, rollPos := recs[first].rowPos, recs[first].rollPos
	rowEnd, rollEnd := len(b.rows), len(b.rollups)
	if hi < len(b.records) {
		rowEnd, rollEnd = b.records[hi].rowPos, b.records[hi].rollPos
	}
	if rows := b.rows[rowPos:rowEnd]; len(rows) > 0 && !skip {
		r := io.MultiReader(bytes.NewReader(copyHeader), bytes.NewReader(rows), bytes.NewReader(copyTrailer))
		tag, err := tx.Conn().PgConn().CopyFrom(ctx, r, copySQL)
		if err != nil {
			return Result{}, opErr("write", fmt.Errorf("COPY into flows: %w", err))
		}
		res.Flows = int(tag.RowsAffected())
		if want := rollEnd - rollPos; res.Flows != want {
			return Result{}, opErr("write", fmt.Errorf("COPY stored %d rows, want %d", res.Flows, want))
		}
		if err := upsertRollup(ctx, tx, b.rollups[rollPos:rollEnd], b.dims); err != nil {
			return Result{}, opErr("write", err)
		}
	}
	next := recs[len(recs)-1].offset + 1
	if _, err := tx.Exec(ctx, "UPDATE kafka_offsets SET next_offset = $4, updated_at = now() WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
		s.cfg.Group, b.Topic, b.Partition, next); err != nil {
		return Result{}, opErr("offsets", fmt.Errorf("store the offset of %s/%d: %w", b.Topic, b.Partition, err))
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, opErr("write", fmt.Errorf("commit: %w", err))
	}
	if res.Flows > 0 && s.cfg.Committed != nil {
		s.cfg.Committed(b.received[rollPos:rollEnd])
	}
	return res, nil
}

var copySQL = "COPY flows (" + strings.Join(ColumnNames(), ", ") + ") FROM STDIN (FORMAT binary)"

type rollupKey struct {
	slot         int64
	srcAS, dstAS uint32
	etype        uint32
}

// rollupSum adds scaled counts (each at most 2^50) in 128 bits: a key
// cannot overflow however many flows a batch holds.
type rollupSum struct {
	bytes, packets [2]uint64 // hi, lo
	flows          int64
}

func add128(s *[2]uint64, v uint64) {
	var c uint64
	s[1], c = bits.Add64(s[1], v, 0)
	s[0] += c
}

// numericText is s as decimal text for a numeric parameter.
func numericText(s [2]uint64) string {
	if s[0] == 0 {
		return strconv.FormatUint(s[1], 10)
	}
	n := new(big.Int).SetUint64(s[0])
	n.Lsh(n, 64)
	return n.Or(n, new(big.Int).SetUint64(s[1])).String()
}

// upsertRollup adds the batch's flows to flows_5m. The batch is aggregated
// here (a few hundred keys for tens of thousands of flows) rather than by
// re-reading the rows. Keys are sorted so concurrent writers lock rollup
// rows in the same order and cannot deadlock. Sums go as numeric text: the
// columns are numeric so that no slot can overflow.
func upsertRollup(ctx context.Context, tx pgx.Tx, rows []rollup, dims []enrichedDims) error {
	agg, keys := sumBy(rows, func(r *rollup) rollupKey { return rollupKey{r.slot, r.srcAS, r.dstAS, r.etype} })
	slices.SortFunc(keys, func(a, b rollupKey) int {
		return cmp.Or(cmp.Compare(a.slot, b.slot), cmp.Compare(a.srcAS, b.srcAS), cmp.Compare(a.dstAS, b.dstAS), cmp.Compare(a.etype, b.etype))
	})
	n := len(keys)
	slots, src, dst, flows := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	bytes, packets := make([]string, n), make([]string, n)
	etypes := make([]int32, n)
	for i, k := range keys {
		s := agg[k]
		slots[i], src[i], dst[i], etypes[i] = k.slot, int64(k.srcAS), int64(k.dstAS), int32(k.etype)
		bytes[i], packets[i], flows[i] = numericText(s.bytes), numericText(s.packets), s.flows
	}
	_, err := tx.Exec(ctx, `INSERT INTO flows_5m AS r (timeslot, src_as, dst_as, etype, bytes, packets, flows)
SELECT to_timestamp(u.slot), u.src, u.dst, u.etype, u.bytes, u.packets, u.flows
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::integer[], $5::numeric[], $6::numeric[], $7::bigint[])
  AS u(slot, src, dst, etype, bytes, packets, flows)
ON CONFLICT (timeslot, src_as, dst_as, etype) DO UPDATE
SET bytes = r.bytes + EXCLUDED.bytes, packets = r.packets + EXCLUDED.packets, flows = r.flows + EXCLUDED.flows`,
		slots, src, dst, etypes, bytes, packets, flows)
	if err != nil {
		return fmt.Errorf("update flows_5m: %w", err)
	}
	return upsertEnrichedRollup(ctx, tx, rows, dims)
}

// enrichedKey is a flows_5m_enriched key; dims indexes the batch's dims.
type enrichedKey struct {
	slot         int64
	srcAS, dstAS uint32
	dims         uint32
}

func compareEnrichedKeys(a, b enrichedKey, dims []enrichedDims) int {
	x, y := &dims[a.dims], &dims[b.dims]
	return cmp.Or(cmp.Compare(a.slot, b.slot), cmp.Compare(a.srcAS, b.srcAS), cmp.Compare(a.dstAS, b.dstAS),
		strings.Compare(x.srcCountry, y.srcCountry), strings.Compare(x.dstCountry, y.dstCountry),
		strings.Compare(x.srcASName, y.srcASName), strings.Compare(x.dstASName, y.dstASName),
		strings.Compare(x.srcNetName, y.srcNetName), strings.Compare(x.dstNetName, y.dstNetName),
		strings.Compare(x.srcNetSite, y.srcNetSite), strings.Compare(x.dstNetSite, y.dstNetSite),
		strings.Compare(x.exporterName, y.exporterName), strings.Compare(x.inIfName, y.inIfName),
		strings.Compare(x.outIfName, y.outIfName),
		cmp.Compare(x.inIfBoundary, y.inIfBoundary), cmp.Compare(x.outIfBoundary, y.outIfBoundary))
}

// sumBy adds the rows' scaled bytes and packets, and counts their flows,
// per key; keys lists each key once, unsorted.
func sumBy[K comparable](rows []rollup, key func(*rollup) K) (agg map[K]*rollupSum, keys []K) {
	agg = make(map[K]*rollupSum, 256)
	for i := range rows {
		r := &rows[i]
		k := key(r)
		s := agg[k]
		if s == nil {
			s = &rollupSum{}
			agg[k] = s
			keys = append(keys, k)
		}
		add128(&s.bytes, r.bytes)
		add128(&s.packets, r.packets)
		s.flows++
	}
	return agg, keys
}

// upsertEnrichedRollup adds the batch's flows to flows_5m_enriched, as
// upsertRollup does for flows_5m, in the same transaction. Keys are sorted
// the same way in every writer (byte order; PostgreSQL's collation may
// differ, but only a consistent order matters to avoid deadlocks).
func upsertEnrichedRollup(ctx context.Context, tx pgx.Tx, rows []rollup, dims []enrichedDims) error {
	agg, keys := sumBy(rows, func(r *rollup) enrichedKey { return enrichedKey{r.slot, r.srcAS, r.dstAS, r.dims} })
	slices.SortFunc(keys, func(a, b enrichedKey) int { return compareEnrichedKeys(a, b, dims) })
	n := len(keys)
	slots, src, dst, flows := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	bytes, packets := make([]string, n), make([]string, n)
	var text [11][]string
	for j := range text {
		text[j] = make([]string, n)
	}
	inB, outB := make([]int16, n), make([]int16, n)
	for i, k := range keys {
		s, d := agg[k], &dims[k.dims]
		slots[i], src[i], dst[i] = k.slot, int64(k.srcAS), int64(k.dstAS)
		for j, v := range [11]string{d.srcCountry, d.dstCountry, d.srcASName, d.dstASName, d.srcNetName, d.dstNetName,
			d.srcNetSite, d.dstNetSite, d.exporterName, d.inIfName, d.outIfName} {
			text[j][i] = v
		}
		inB[i], outB[i] = d.inIfBoundary, d.outIfBoundary
		bytes[i], packets[i], flows[i] = numericText(s.bytes), numericText(s.packets), s.flows
	}
	_, err := tx.Exec(ctx, `INSERT INTO flows_5m_enriched AS r (timeslot, src_as, dst_as, src_country, dst_country, src_as_name, dst_as_name,
  src_net_name, dst_net_name, src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name, in_if_boundary, out_if_boundary,
  bytes, packets, flows)
SELECT to_timestamp(u.slot), u.src, u.dst, u.sc, u.dc, u.san, u.dan, u.snn, u.dnn, u.sns, u.dns, u.exp, u.iin, u.oin, u.ib, u.ob,
  u.bytes, u.packets, u.flows
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
  $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::smallint[], $16::smallint[], $17::numeric[], $18::numeric[], $19::bigint[])
  AS u(slot, src, dst, sc, dc, san, dan, snn, dnn, sns, dns, exp, iin, oin, ib, ob, bytes, packets, flows)
ON CONFLICT (timeslot, src_as, dst_as, src_country, dst_country, src_as_name, dst_as_name, src_net_name, dst_net_name,
  src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name, in_if_boundary, out_if_boundary) DO UPDATE
SET bytes = r.bytes + EXCLUDED.bytes, packets = r.packets + EXCLUDED.packets, flows = r.flows + EXCLUDED.flows`,
		slots, src, dst, text[0], text[1], text[2], text[3], text[4], text[5], text[6], text[7], text[8], text[9], text[10],
		inB, outB, bytes, packets, flows)
	if err != nil {
		return fmt.Errorf("update flows_5m_enriched: %w", err)
	}
	return nil
}
