package pgsink

import (
	"encoding/binary"
	"slices"
	"time"
	"unsafe"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Batch holds the flows of consecutive records of one Kafka partition,
// already encoded as binary COPY rows, so the writer only streams bytes.
// Records are added whole (BeginRecord, AddFlow..., then EndRecord or
// AbortRecord), so a record never half-lands.
type Batch struct {
	Topic     string
	Partition int32
	// Start is where consumption of this batch began: the previous batch's
	// End, or the claim's initial offset. The sink refuses a batch starting
	// after the stored offset, since records in between would be lost.
	Start int64
	// End is the offset after the last record added: what kafka_offsets
	// holds once the batch is committed.
	End int64
	// HighWater is the partition's high water mark when the batch was
	// closed, for the lag metric.
	HighWater int64

	rows    []byte   // binary COPY tuples, no header or trailer
	rollups []rollup // one per flow, aggregated at write time
	records []record // one per record, to skip a prefix already stored
	raw     []byte   // keys and values of the records with flows (SetRaw)
	days    map[int64]struct{}
	flows   int
	// dims holds each distinct set of enriched dimensions once, and the
	// rollups refer to it by index: a batch has few distinct sets, and
	// 11 strings per flow would triple the rollups' memory (and give the
	// garbage collector 11 pointers per flow to scan).
	dims     []enrichedDims
	dimIndex map[enrichedDims]uint32
	lastDims uint32 // the previous flow's index in dims, if len(dims) > 0
	// dimsCache finds a set by the addresses of its strings (1 + index in
	// dims; 0 is empty): the inserter's decoder interns names, so a set
	// that recurs usually has the same addresses, and is found without
	// hashing its text as dimIndex does.
	dimsCache [dimsCacheSize]uint32
	// Owner is opaque to the sink; the inserter uses it to acknowledge the
	// batch to the consumer session that produced it.
	Owner any

	// received is each flow's time_received_ns, parallel to rollups, for
	// the latency Config.Committed reports after the commit.
	received []int64

	cur     record
	lastDay int64
}

type record struct {
	offset  int64
	rowPos  int
	rollPos int
	// The record's key and value in Batch.raw (copied: see SetRaw).
	rawPos, keyLen, valueLen int
}

type rollup struct {
	slot           int64
	bytes, packets uint64 // scaled by max(sampling_rate, 1)
	srcAS, dstAS   uint32
	etype          uint32
	dims           uint32 // index in Batch.dims
}

// enrichedDims are flows_5m_enriched's key columns besides the timeslot and
// AS numbers. The strings are the decoded message's: DecodeWire (and
// DecodeWireInterned, whose strings flows share) never makes one a view
// of a buffer that is overwritten, so keeping them costs no copy. A batch
// keeps each distinct set once (Batch.dims).
type enrichedDims struct {
	srcCountry, dstCountry, srcASName, dstASName   string
	srcNetName, dstNetName, srcNetSite, dstNetSite string
	exporterName, inIfName, outIfName              string
	inIfBoundary, outIfBoundary                    int16
}

// NewBatch returns an empty batch for topic/partition.
func NewBatch(topic string, partition int32) *Batch {
	b := &Batch{days: map[int64]struct{}{}, dimIndex: map[enrichedDims]uint32{}}
	b.Reset(topic, partition)
	return b
}

// Grow makes room for flows more flows, so a batch of plain flows filled
// up to its flush threshold never reallocates (growing by append would
// leave up to a quarter unused, in every batch held). Enriched rows are
// wider: their batches grow once, and keep that size when reused.
func (b *Batch) Grow(flows int) {
	b.rows = slices.Grow(b.rows, flows*plainRowBytes)
	b.rollups = slices.Grow(b.rollups, flows)
	b.received = slices.Grow(b.received, flows)
	b.records = slices.Grow(b.records, flows)
}

// Reset empties b for reuse, keeping its buffers.
func (b *Batch) Reset(topic string, partition int32) {
	b.Topic, b.Partition = topic, partition
	b.Start, b.End, b.HighWater = 0, 0, 0
	b.rows = b.rows[:0]
	b.rollups = b.rollups[:0]
	b.received = b.received[:0]
	b.records = b.records[:0]
	b.raw = b.raw[:0]
	clear(b.dims) // let the strings go
	b.dims = b.dims[:0]
	clear(b.dimIndex)
	clear(b.dimsCache[:])
	clear(b.days)
	b.lastDay = -1
	b.flows = 0
	b.Owner = nil
}

// Flows is the number of flows in the batch.
func (b *Batch) Flows() int { return b.flows }

// Records is the number of Kafka records (valid or not) in the batch.
func (b *Batch) Records() int { return len(b.records) }

// Bytes is the size of the encoded rows.
func (b *Batch) Bytes() int { return len(b.rows) }

// BeginRecord starts the record at offset.
func (b *Batch) BeginRecord(offset int64) {
	b.cur = record{offset: offset, rowPos: len(b.rows), rollPos: len(b.rollups)}
}

// AddFlow appends m, which must have passed ValidateFlow, to the current
// record.
func (b *Batch) AddFlow(m *pb.FlowMessage) {
	b.rows = appendRow(b.rows, m)
	slot := Timeslot(m.TimeReceivedNs)
	// flows_5m holds scaled sums; ValidateFlow bounds each product to 2^50.
	rate := max(m.SamplingRate, 1)
	b.rollups = append(b.rollups, rollup{slot: slot, srcAS: m.SrcAs, dstAS: m.DstAs, etype: m.Etype, bytes: m.Bytes * rate, packets: m.Packets * rate,
		dims: b.dimsOf(m)})
	b.received = append(b.received, int64(m.TimeReceivedNs))
	// Flows arrive in time order: only touch the map when the day changes.
	if day := slot - slot%86400; day != b.lastDay {
		b.days[day] = struct{}{}
		b.lastDay = day
	}
}

// appendRow appends m as a binary COPY tuple.
func appendRow(dst []byte, m *pb.FlowMessage) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(columns)))
	for i := range columns {
		dst = columns[i].put(dst, m)
	}
	return dst
}

// plainRowBytes is the size of the largest row without enrichment: IPv6
// addresses and every time set.
var plainRowBytes = func() int {
	a := make([]byte, 16)
	return len(appendRow(nil, &pb.FlowMessage{TimeReceivedNs: 1, TimeFlowStartNs: 1, TimeFlowEndNs: 1, SamplerAddress: a, SrcAddr: a, DstAddr: a}))
}()

// dimsOf is the index in b.dims of m's enriched dimensions, added if new.
// Consecutive flows often share them (all empty without enrichment), so
// the previous flow's set is tried before the map.
func (b *Batch) dimsOf(m *pb.FlowMessage) uint32 {
	d := enrichedDims{m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName, m.SrcNetSite, m.DstNetSite,
		m.ExporterName, m.InIfName, m.OutIfName, int16(m.InIfBoundary), int16(m.OutIfBoundary)}
	if len(b.dims) > 0 && b.dims[b.lastDims] == d {
		return b.lastDims
	}
	// Strings at the same address compare without reading their bytes;
	// equal ones elsewhere still compare equal, so a hit is always right.
	slot := &b.dimsCache[d.addrHash()]
	if i := *slot; i != 0 && b.dims[i-1] == d {
		b.lastDims = i - 1
		return i - 1
	}
	i, ok := b.dimIndex[d]
	if !ok {
		i = uint32(len(b.dims))
		b.dims = append(b.dims, d)
		b.dimIndex[d] = i
	}
	*slot = i + 1
	b.lastDims = i
	return i
}

const dimsCacheBits = 10
const dimsCacheSize = 1 << dimsCacheBits

// addrHash hashes the addresses and lengths of d's strings and its
// boundaries into dimsCacheBits bits.
func (d *enrichedDims) addrHash() uint32 {
	h := uint64(d.inIfBoundary)<<16 | uint64(uint16(d.outIfBoundary))
	for _, s := range [...]string{d.srcCountry, d.dstCountry, d.srcASName, d.dstASName, d.srcNetName, d.dstNetName,
		d.srcNetSite, d.dstNetSite, d.exporterName, d.inIfName, d.outIfName} {
		h = (h ^ uint64(uintptr(unsafe.Pointer(unsafe.StringData(s))))) * 0x9e3779b97f4a7c15
		h ^= uint64(len(s))
	}
	return uint32(h >> (64 - dimsCacheBits))
}

// EndRecord keeps the current record's flows. A record with no valid flow
// (rejected) still ends here, so its offset is committed with the batch.
func (b *Batch) EndRecord() {
	b.records = append(b.records, b.cur)
	b.flows = len(b.rollups)
	b.End = b.cur.offset + 1
}

// AbortRecord drops the flows added since BeginRecord; the record still
// counts as consumed.
func (b *Batch) AbortRecord() {
	b.rows = b.rows[:b.cur.rowPos]
	b.rollups = b.rollups[:b.cur.rollPos]
	b.received = b.received[:b.cur.rollPos]
	b.EndRecord()
}

// SetRaw keeps a copy of the key and value of the record just ended, so a
// record the database refuses can still go to the dead-letter topic whole.
// It copies rather than keeping the consumer's slices: those point into
// the whole decompressed batch they came from, which would stay in memory.
func (b *Batch) SetRaw(key, value []byte) {
	n := len(b.records)
	if n == 0 {
		return
	}
	r := &b.records[n-1]
	r.rawPos, r.keyLen, r.valueLen = len(b.raw), len(key), len(value)
	b.raw = append(append(b.raw, key...), value...)
}

// Raw is what SetRaw kept of record i (nil, nil if nothing).
func (b *Batch) Raw(i int) (key, value []byte) {
	r := b.records[i]
	if r.keyLen == 0 && r.valueLen == 0 {
		return nil, nil
	}
	kv := b.raw[r.rawPos : r.rawPos+r.keyLen+r.valueLen]
	return kv[:r.keyLen], kv[r.keyLen:]
}

// RawBytes is the size of what SetRaw kept.
func (b *Batch) RawBytes() int { return len(b.raw) }

// RecordOffset is the Kafka offset of record i.
func (b *Batch) RecordOffset(i int) int64 { return b.records[i].offset }

// Days lists the UTC days (Unix seconds at midnight) the batch's rows fall in.
func (b *Batch) Days() []time.Time {
	out := make([]time.Time, 0, len(b.days))
	for d := range b.days {
		out = append(out, time.Unix(d, 0).UTC())
	}
	return out
}

// rollEnd is where record i's rollups end.
func (b *Batch) rollEnd(i int) int {
	if i+1 < len(b.records) {
		return b.records[i+1].rollPos
	}
	return len(b.rollups)
}

// daysIn lists the distinct UTC days of records [lo, hi).
func (b *Batch) daysIn(lo, hi int) []time.Time {
	seen := map[int64]struct{}{}
	var out []time.Time
	for _, r := range b.rollups[b.records[lo].rollPos:b.rollEnd(hi-1)] {
		d := r.slot - r.slot%86400
		if _, ok := seen[d]; !ok {
			seen[d] = struct{}{}
			out = append(out, time.Unix(d, 0).UTC())
		}
	}
	return out
}

// splitByDays cuts records [lo, hi) into runs touching at most maxDays
// days each, on record boundaries (a single record spanning more days is
// a run of its own). Usually the whole batch is one run.
func (b *Batch) splitByDays(lo, hi, maxDays int) [][2]int {
	if len(b.days) <= maxDays {
		return [][2]int{{lo, hi}}
	}
	var out [][2]int
	cur := map[int64]struct{}{}
	var days []int64
	start := lo
	for i := lo; i < hi; i++ {
		days = days[:0]
		for _, r := range b.rollups[b.records[i].rollPos:b.rollEnd(i)] {
			if d := r.slot - r.slot%86400; !slices.Contains(days, d) {
				days = append(days, d)
			}
		}
		fresh := 0
		for _, d := range days {
			if _, ok := cur[d]; !ok {
				fresh++
			}
		}
		if i > start && len(cur)+fresh > maxDays {
			out = append(out, [2]int{start, i})
			start = i
			clear(cur)
		}
		for _, d := range days {
			cur[d] = struct{}{}
		}
	}
	return append(out, [2]int{start, hi})
}
