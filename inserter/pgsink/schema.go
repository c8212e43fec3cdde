// Package pgsink writes decoded flows to PostgreSQL: the schema, the binary
// COPY encoding of a batch, and the exactly-once transaction that stores a
// batch together with the Kafka offsets it covers.
package pgsink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// column is one column of the flows table. The CREATE TABLE, the COPY
// column list and the row encoder all derive from the columns table below,
// so a column is added in exactly one place.
type column struct {
	name string
	typ  string // PostgreSQL type, as written in the DDL
	put  func(dst []byte, m *pb.FlowMessage) []byte
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC in Unix microseconds: the origin
// of PostgreSQL's binary timestamps.
const pgEpochMicros = 946684800 * 1_000_000

var columns = []column{
	{"time_received", "timestamptz NOT NULL", func(b []byte, m *pb.FlowMessage) []byte { return putTime(b, m.TimeReceivedNs) }},
	{"time_flow_start", "timestamptz", func(b []byte, m *pb.FlowMessage) []byte { return putTime(b, m.TimeFlowStartNs) }},
	{"time_flow_end", "timestamptz", func(b []byte, m *pb.FlowMessage) []byte { return putTime(b, m.TimeFlowEndNs) }},
	{"type", "smallint", func(b []byte, m *pb.FlowMessage) []byte { return putInt2(b, int16(m.Type)) }},
	{"sequence_num", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.SequenceNum)) }},
	{"sampling_rate", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.SamplingRate)) }},
	{"sampler_address", "inet", func(b []byte, m *pb.FlowMessage) []byte { return putInet(b, m.SamplerAddress) }},
	{"src_addr", "inet", func(b []byte, m *pb.FlowMessage) []byte { return putInet(b, m.SrcAddr) }},
	{"dst_addr", "inet", func(b []byte, m *pb.FlowMessage) []byte { return putInet(b, m.DstAddr) }},
	{"src_as", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.SrcAs)) }},
	{"dst_as", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.DstAs)) }},
	{"etype", "integer", func(b []byte, m *pb.FlowMessage) []byte { return putInt4(b, int32(m.Etype)) }},
	{"proto", "smallint", func(b []byte, m *pb.FlowMessage) []byte { return putInt2(b, int16(m.Proto)) }},
	{"src_port", "integer", func(b []byte, m *pb.FlowMessage) []byte { return putInt4(b, int32(m.SrcPort)) }},
	{"dst_port", "integer", func(b []byte, m *pb.FlowMessage) []byte { return putInt4(b, int32(m.DstPort)) }},
	{"tcp_flags", "integer", func(b []byte, m *pb.FlowMessage) []byte { return putInt4(b, int32(m.TcpFlags)) }},
	{"in_if", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.InIf)) }},
	{"out_if", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.OutIf)) }},
	{"bytes", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.Bytes)) }},
	{"packets", "bigint", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.Packets)) }},
	// The enricher's fields (pb 2001-2020). A flow without them (a topic
	// the enricher did not write) stores the defaults. Columns added after
	// the first release carry a constant DEFAULT so that migrating an
	// existing database adds them without rewriting it (enrichedColumns).
	{"src_country", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.SrcCountry) }},
	{"dst_country", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.DstCountry) }},
	{"src_as_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.SrcAsName) }},
	{"dst_as_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.DstAsName) }},
	{"src_net_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.SrcNetName) }},
	{"dst_net_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.DstNetName) }},
	{"src_net_role", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.SrcNetRole) }},
	{"dst_net_role", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.DstNetRole) }},
	{"src_net_site", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.SrcNetSite) }},
	{"dst_net_site", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.DstNetSite) }},
	{"exporter_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.ExporterName) }},
	{"in_if_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.InIfName) }},
	{"out_if_name", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.OutIfName) }},
	{"in_if_description", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.InIfDescription) }},
	{"out_if_description", textCol, func(b []byte, m *pb.FlowMessage) []byte { return putText(b, m.OutIfDescription) }},
	{"in_if_speed", "bigint NOT NULL DEFAULT 0", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.InIfSpeed)) }},
	{"out_if_speed", "bigint NOT NULL DEFAULT 0", func(b []byte, m *pb.FlowMessage) []byte { return putInt8(b, int64(m.OutIfSpeed)) }},
	{"in_if_boundary", "smallint NOT NULL DEFAULT 0", func(b []byte, m *pb.FlowMessage) []byte { return putInt2(b, int16(m.InIfBoundary)) }},
	{"out_if_boundary", "smallint NOT NULL DEFAULT 0", func(b []byte, m *pb.FlowMessage) []byte { return putInt2(b, int16(m.OutIfBoundary)) }},
	{"sampling_rate_from_exporter", "boolean NOT NULL DEFAULT false", func(b []byte, m *pb.FlowMessage) []byte { return putBool(b, m.SamplingRateFromExporter) }},
}

const textCol = "text NOT NULL DEFAULT ''"

// firstEnrichedColumn is the index in columns of the first column the
// previous release did not have: from there on, CreateSchema adds what a
// database created by it lacks.
const firstEnrichedColumn = 20

// Bounds on the enricher's text fields, so that a hostile or broken flow
// cannot bloat rows, and flows_5m_enriched's key (11 of these strings)
// stays well inside a btree index entry (about 2700 bytes).
const (
	MaxNameBytes        = pb.MaxNameBytes        // countries, AS, network and interface names, roles, sites
	MaxDescriptionBytes = pb.MaxDescriptionBytes // in_if_description, out_if_description
)

// ColumnNames lists the flows columns in table order.
func ColumnNames() []string {
	names := make([]string, len(columns))
	for i, c := range columns {
		names[i] = c.name
	}
	return names
}

// Sentinel errors of ValidateFlow, so callers can count rejections by
// reason with errors.Is. Any other error is a field that does not fit its
// column.
var (
	// ErrOutOfRange: a counter, the sampling rate or a scaled product is
	// above its bound (MaxCounter, MaxSamplingRate, MaxScaled).
	ErrOutOfRange = errors.New("value out of range")
	// ErrTooOld: time_received is before Limits.MinTimeNs (the retention
	// cutoff, or 2000-01-01 without retention).
	ErrTooOld = errors.New("time_received too old")
	// ErrTooNew: time_received is after Limits.MaxTimeNs (now + max future).
	ErrTooNew = errors.New("time_received too far in the future")
	// ErrTextTooLong: an enrichment text field is above MaxNameBytes or
	// MaxDescriptionBytes (counted as out_of_range).
	ErrTextTooLong = fmt.Errorf("%w: text field too long", ErrOutOfRange)
)

// Bounds on what a flow may carry. With bytes and packets scaled by the
// sampling rate at most 2^50, any per-row product a query computes (x8 for
// bits, with headroom to spare) stays far inside bigint, and sums are taken
// as numeric (sum(bigint) in a query, flows_5m's numeric columns).
const (
	MaxCounter      = 1 << 48        // bytes, packets as sent (sampled)
	MaxSamplingRate = math.MaxUint32 // sampling_rate
	MaxScaled       = 1 << 50        // bytes or packets x max(sampling_rate, 1)
)

// MinTime is the earliest time_received accepted, even without retention.
var MinTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

var minTimeNs = uint64(MinTime.UnixNano())

// Limits is the window of time_received a flow may have, in Unix ns.
type Limits struct {
	MinTimeNs, MaxTimeNs uint64
}

// NewLimits is the window at now: not older than retention (0: no limit
// but MinTime), not further ahead than maxFuture.
func NewLimits(now time.Time, retention, maxFuture time.Duration) Limits {
	// Integer arithmetic: this runs once per record on the hot path.
	n := now.UnixNano()
	l := Limits{MinTimeNs: minTimeNs, MaxTimeNs: uint64(n + int64(maxFuture))}
	// Compared as int64: a retention reaching before 1970 must not wrap.
	if cut := n - int64(retention); retention > 0 && cut > int64(minTimeNs) {
		l.MinTimeNs = uint64(cut)
	}
	return l
}

// ValidateFlow checks that every field of m fits its column and the bounds
// above, so a batch never fails in the database, and no query overflows,
// because of one message. Callers reject the whole record on error.
func ValidateFlow(m *pb.FlowMessage, lim Limits) error {
	// time_received partitions the table: it must be set and plausible, which
	// also rejects random bytes that happen to parse as protobuf.
	if m.TimeReceivedNs == 0 {
		return fmt.Errorf("time_received_ns is not set")
	}
	if m.TimeReceivedNs < lim.MinTimeNs {
		return fmt.Errorf("%w: time_received %s is before %s (retention, or 2000-01-01)", ErrTooOld,
			time.Unix(0, int64(m.TimeReceivedNs)).UTC().Format(time.RFC3339), time.Unix(0, int64(lim.MinTimeNs)).UTC().Format(time.RFC3339))
	}
	if m.TimeReceivedNs > lim.MaxTimeNs {
		return fmt.Errorf("%w: time_received_ns %d is after %s (now + max future)", ErrTooNew,
			m.TimeReceivedNs, time.Unix(0, int64(lim.MaxTimeNs)).UTC().Format(time.RFC3339))
	}
	for _, f := range [...]struct {
		name string
		v    uint64
		max  uint64
	}{
		{"sampling_rate", m.SamplingRate, MaxSamplingRate},
		{"bytes", m.Bytes, MaxCounter},
		{"packets", m.Packets, MaxCounter},
	} {
		if f.v > f.max {
			return fmt.Errorf("%w: %s %d exceeds %d", ErrOutOfRange, f.name, f.v, f.max)
		}
	}
	// Each factor is below 2^48 and 2^32: the 128-bit product is exact.
	rate := max(m.SamplingRate, 1)
	if hi, lo := bits.Mul64(m.Bytes, rate); hi != 0 || lo > MaxScaled {
		return fmt.Errorf("%w: bytes %d x sampling_rate %d exceeds %d", ErrOutOfRange, m.Bytes, rate, uint64(MaxScaled))
	}
	if hi, lo := bits.Mul64(m.Packets, rate); hi != 0 || lo > MaxScaled {
		return fmt.Errorf("%w: packets %d x sampling_rate %d exceeds %d", ErrOutOfRange, m.Packets, rate, uint64(MaxScaled))
	}
	for _, f := range [...]struct {
		name string
		v    uint64
		max  uint64
	}{
		{"time_flow_start_ns", m.TimeFlowStartNs, math.MaxInt64},
		{"time_flow_end_ns", m.TimeFlowEndNs, math.MaxInt64},
	} {
		if f.v > f.max {
			return fmt.Errorf("%s %d exceeds %d", f.name, f.v, f.max)
		}
	}
	for _, f := range [...]struct {
		name string
		v    []byte
	}{
		{"sampler_address", m.SamplerAddress},
		{"src_addr", m.SrcAddr},
		{"dst_addr", m.DstAddr},
	} {
		if n := len(f.v); n != 0 && n != 4 && n != 16 {
			return fmt.Errorf("%s has %d bytes, want 0, 4 or 16", f.name, n)
		}
	}
	for _, f := range [...]struct {
		name string
		v    uint32
		max  uint32
	}{
		{"type", uint32(m.Type), math.MaxInt16},
		{"proto", m.Proto, 255},
		{"src_port", m.SrcPort, 65535},
		{"dst_port", m.DstPort, 65535},
		{"etype", m.Etype, 65535},
		{"tcp_flags", m.TcpFlags, 65535},
	} {
		if f.v > f.max {
			return fmt.Errorf("%s %d exceeds %d", f.name, f.v, f.max)
		}
	}
	return validateEnrichment(m)
}

// textFields names the enricher's text fields in validateEnrichment's
// order; from firstDescription on, they are descriptions.
var textFields = [...]string{"src_country", "dst_country", "src_as_name", "dst_as_name", "src_net_name", "dst_net_name", "src_net_role", "dst_net_role",
	"src_net_site", "dst_net_site", "exporter_name", "in_if_name", "out_if_name", "in_if_description", "out_if_description"}

const firstDescription = 13

// validateEnrichment checks the enricher's fields (pb 2001-2020): bounded
// text without NUL bytes (PostgreSQL's text refuses them; DecodeWire has
// already refused invalid UTF-8), speeds that fit bigint, and boundaries
// that are one of the enum's values (proto3 enums are open).
func validateEnrichment(m *pb.FlowMessage) error {
	// Per flow, on the hot path: no per-field error context is built
	// unless a field fails.
	texts := [...]string{m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName, m.SrcNetRole, m.DstNetRole,
		m.SrcNetSite, m.DstNetSite, m.ExporterName, m.InIfName, m.OutIfName, m.InIfDescription, m.OutIfDescription}
	for i, v := range texts {
		if v == "" {
			continue
		}
		limit := MaxNameBytes
		if i >= firstDescription {
			limit = MaxDescriptionBytes
		}
		if len(v) > limit {
			return fmt.Errorf("%w: %s has %d bytes, at most %d are stored", ErrTextTooLong, textFields[i], len(v), limit)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%s holds a NUL byte, which PostgreSQL text cannot store", textFields[i])
		}
	}
	if m.InIfSpeed > math.MaxInt64 || m.OutIfSpeed > math.MaxInt64 {
		return fmt.Errorf("%w: interface speed %d/%d exceeds %d", ErrOutOfRange, m.InIfSpeed, m.OutIfSpeed, int64(math.MaxInt64))
	}
	for _, f := range [...]struct {
		name string
		v    pb.FlowMessage_Boundary
	}{{"in_if_boundary", m.InIfBoundary}, {"out_if_boundary", m.OutIfBoundary}} {
		if f.v < pb.FlowMessage_BOUNDARY_UNDEFINED || f.v > pb.FlowMessage_BOUNDARY_INTERNAL {
			return fmt.Errorf("%s %d is not 0 (undefined), 1 (external) or 2 (internal)", f.name, f.v)
		}
	}
	return nil
}

// putText stores a string (already valid UTF-8 without NUL: ValidateFlow)
// as text.
func putText(b []byte, v string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func putBool(b []byte, v bool) []byte {
	b = binary.BigEndian.AppendUint32(b, 1)
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func putInt2(b []byte, v int16) []byte {
	b = binary.BigEndian.AppendUint32(b, 2)
	return binary.BigEndian.AppendUint16(b, uint16(v))
}

func putInt4(b []byte, v int32) []byte {
	b = binary.BigEndian.AppendUint32(b, 4)
	return binary.BigEndian.AppendUint32(b, uint32(v))
}

func putInt8(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// putTime stores Unix nanoseconds as timestamptz; 0 means "not sent" and
// becomes NULL rather than 1970-01-01.
func putTime(b []byte, ns uint64) []byte {
	if ns == 0 {
		return binary.BigEndian.AppendUint32(b, math.MaxUint32) // -1: NULL
	}
	return putInt8(b, int64(ns/1000)-pgEpochMicros)
}

// putInet stores 4 bytes as an IPv4 inet (never the ::ffff: mapped form) and
// 16 bytes as IPv6; an empty address is NULL.
func putInet(b []byte, addr []byte) []byte {
	const afInet, afInet6 = 2, 3 // PostgreSQL's own family codes
	switch len(addr) {
	case 4:
		b = binary.BigEndian.AppendUint32(b, 8)
		b = append(b, afInet, 32, 0, 4)
	case 16:
		b = binary.BigEndian.AppendUint32(b, 20)
		b = append(b, afInet6, 128, 0, 16)
	default:
		return binary.BigEndian.AppendUint32(b, math.MaxUint32)
	}
	return append(b, addr...)
}

// AddrOf converts a wire address to netip.Addr the way the table stores it:
// 4 bytes stay IPv4. Tests and queries use it to compute expected values.
func AddrOf(b []byte) (netip.Addr, bool) {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)), true
	case 16:
		return netip.AddrFrom16([16]byte(b)), true
	}
	return netip.Addr{}, false
}

// Timeslot is the 5-minute bucket of flows_5m for a time_received.
func Timeslot(ns uint64) int64 {
	s := int64(ns / 1e9)
	return s - s%300
}

// ddl creates everything the sink needs. Each statement is idempotent; the
// caller runs them under an advisory lock so concurrent inserters starting
// at once do not race on the catalog.
func ddl() []string {
	var cols []string
	for _, c := range columns {
		cols = append(cols, "  "+c.name+" "+c.typ)
	}
	stmts := []string{
		"CREATE TABLE IF NOT EXISTS flows (\n" + strings.Join(cols, ",\n") + "\n) PARTITION BY RANGE (time_received)",
	}
	// A flows table created by an earlier release lacks the later columns:
	// CREATE TABLE IF NOT EXISTS does not add them. ADD COLUMN with a
	// constant default changes only the catalog (PostgreSQL 11+), on flows
	// and every partition, without rewriting a row; stmtNeeded runs it
	// only when the column is missing.
	for _, c := range columns[firstEnrichedColumn:] {
		stmts = append(stmts, "ALTER TABLE flows ADD COLUMN IF NOT EXISTS "+c.name+" "+c.typ)
	}
	return append(stmts,
		// Rows arrive roughly in time order and are never updated: a BRIN
		// index is tiny and cheap to maintain during COPY.
		"CREATE INDEX IF NOT EXISTS flows_time_received_brin ON flows USING brin (time_received)",
		`CREATE TABLE IF NOT EXISTS flows_5m (
  timeslot timestamptz NOT NULL,
  src_as bigint NOT NULL,
  dst_as bigint NOT NULL,
  etype integer NOT NULL,
  bytes numeric NOT NULL,
  packets numeric NOT NULL,
  flows bigint NOT NULL,
  PRIMARY KEY (timeslot, src_as, dst_as, etype)
)`,
		alertsDDL[0], alertsDDL[1],
		`CREATE TABLE IF NOT EXISTS kafka_offsets (
  consumer_group text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  next_offset bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
)`,
		// The one place that states the sampling rule: counts are stored as
		// sent, and a sampling_rate of 0 (NetFlow v5, v9 without options)
		// counts as 1.
		`CREATE OR REPLACE VIEW flows_scaled AS
SELECT *, bytes * greatest(sampling_rate, 1) AS bytes_scaled,
       packets * greatest(sampling_rate, 1) AS packets_scaled
FROM flows`,
		"COMMENT ON COLUMN flows.bytes IS 'sampled bytes as sent by the exporter; multiply by greatest(sampling_rate, 1), see view flows_scaled'",
		"COMMENT ON TABLE flows_5m IS "+quote(rollupMeaning),
		"COMMENT ON COLUMN flows_5m.bytes IS 'sum of scaled bytes: bytes * greatest(sampling_rate, 1), as bytes_scaled in flows_scaled'",
		"COMMENT ON COLUMN flows_5m.packets IS 'sum of scaled packets: packets * greatest(sampling_rate, 1), as packets_scaled in flows_scaled'",
		"COMMENT ON COLUMN flows_5m.flows IS 'number of flow rows'",
		// The dashboards' rollup of the enriched dimensions (docs/inserter.md
		// justifies its cardinality). Every flow lands in it, enriched or
		// not ('' and 0 then), so its sums equal flows_5m's.
		`CREATE TABLE IF NOT EXISTS flows_5m_enriched (
  timeslot timestamptz NOT NULL,
  src_as bigint NOT NULL,
  dst_as bigint NOT NULL,
  src_country text NOT NULL,
  dst_country text NOT NULL,
  src_as_name text NOT NULL,
  dst_as_name text NOT NULL,
  src_net_name text NOT NULL,
  dst_net_name text NOT NULL,
  src_net_site text NOT NULL,
  dst_net_site text NOT NULL,
  exporter_name text NOT NULL,
  in_if_name text NOT NULL,
  out_if_name text NOT NULL,
  in_if_boundary smallint NOT NULL,
  out_if_boundary smallint NOT NULL,
  bytes numeric NOT NULL,
  packets numeric NOT NULL,
  flows bigint NOT NULL,
  PRIMARY KEY (timeslot, src_as, dst_as, src_country, dst_country, src_as_name, dst_as_name, src_net_name, dst_net_name,
    src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name, in_if_boundary, out_if_boundary)
)`,
		"COMMENT ON TABLE flows_5m_enriched IS "+quote(enrichedRollupMeaning),
	)
}

// EnrichedRollupSQL aggregates flows the way flows_5m_enriched holds them:
// CreateSchema fills a new flows_5m_enriched from it (the rows an earlier
// release stored count with their default dimensions), and tests compare
// the table with it.
const EnrichedRollupSQL = `SELECT to_timestamp(floor(extract(epoch FROM time_received) / 300) * 300) AS timeslot,
  coalesce(src_as, 0) AS src_as, coalesce(dst_as, 0) AS dst_as, src_country, dst_country, src_as_name, dst_as_name,
  src_net_name, dst_net_name, src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name, in_if_boundary, out_if_boundary,
  sum(bytes::numeric * greatest(sampling_rate, 1)) AS bytes, sum(packets::numeric * greatest(sampling_rate, 1)) AS packets, count(*) AS flows
FROM flows GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16`

// enrichedRollupMeaning is what flows_5m_enriched holds.
const enrichedRollupMeaning = "5-minute rollup of flows per AS, country, AS name, network name and site, exporter and interface name and boundary: scaled bytes and packets (x greatest(sampling_rate, 1)) and the flow count"

// rollupMeaning is what flows_5m holds, the same in PostgreSQL and ClickHouse.
const rollupMeaning = "5-minute rollup of flows per (src_as, dst_as, etype): scaled bytes and packets (x greatest(sampling_rate, 1)) and the flow count"

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// migrateRollup converts a flows_5m created before it held scaled sums
// (bigint columns of sampled bytes and packets) to numeric scaled sums,
// rebuilt from the rows of flows. It runs inside CreateSchema's
// transaction, under its advisory lock, so it happens once and atomically;
// stop inserters of the older version before starting this one.
func migrateRollup(ctx context.Context, tx pgx.Tx) (bool, error) {
	var typ string
	err := tx.QueryRow(ctx, `SELECT data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'flows_5m' AND column_name = 'bytes'`).Scan(&typ)
	if err != nil {
		return false, fmt.Errorf("read the type of flows_5m.bytes: %w", err)
	}
	if typ == "numeric" {
		return false, nil
	}
	for _, stmt := range []string{
		// Writers wait (flows_5m) or stop adding rows (flows) until the rebuilt
		// rollup and the rows it was built from are committed together.
		"LOCK TABLE flows_5m IN ACCESS EXCLUSIVE MODE",
		"LOCK TABLE flows IN SHARE MODE",
		"ALTER TABLE flows_5m ALTER COLUMN bytes TYPE numeric, ALTER COLUMN packets TYPE numeric",
		"DELETE FROM flows_5m",
		// numeric before multiplying: old rows were not bounded, and must
		// not make the upgrade fail.
		`INSERT INTO flows_5m (timeslot, src_as, dst_as, etype, bytes, packets, flows)
SELECT to_timestamp(floor(extract(epoch FROM time_received) / 300) * 300), src_as, dst_as, etype,
       sum(bytes::numeric * greatest(sampling_rate, 1)), sum(packets::numeric * greatest(sampling_rate, 1)), count(*)
FROM flows GROUP BY 1, 2, 3, 4`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return false, fmt.Errorf("migrate flows_5m to scaled sums (%s): %w", firstLine(stmt), err)
		}
	}
	return true, nil
}
