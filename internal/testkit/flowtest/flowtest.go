// Package flowtest holds the inserter's test helpers: mocker flows framed
// as Kafka records with their expected totals, a producer, and the
// database checks every exactly-once test ends with.
package flowtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Totals is what a set of flows must sum to once stored.
type Totals struct {
	Flows, Bytes, Packets int64
}

func (t *Totals) add(m *pb.FlowMessage) {
	t.Flows++
	t.Bytes += int64(m.Bytes)
	t.Packets += int64(m.Packets)
}

// Gen makes deterministic, varied flows: four exporters (one sending
// sampling_rate 0) with their own sequence numbers, so (sampler_address,
// sequence_num) identifies a flow; a quarter IPv6.
type Gen struct {
	r   *rand.Rand
	seq [4]uint32
}

// NewGen returns a generator for seed.
// Each seed numbers its flows from seed<<20, so flows of different seeds
// stay distinct.
func NewGen(seed int64) *Gen {
	g := &Gen{r: rand.New(rand.NewPCG(uint64(seed), 2))}
	for i := range g.seq {
		g.seq[i] = uint32(seed) << 20
	}
	return g
}

var rates = [4]uint64{1000, 100, 0, 1}

// Next overwrites m with the next flow, received at now.
func (g *Gen) Next(m *pb.FlowMessage, now time.Time) {
	r := g.r
	m.Reset()
	e := r.IntN(4)
	g.seq[e]++
	m.Type = pb.FlowMessage_FlowType(1 + e%4)
	m.SequenceNum = g.seq[e]
	m.SamplingRate = rates[e]
	m.SamplerAddress = []byte{192, 0, 2, byte(250 + e)}
	m.TimeReceivedNs = uint64(now.UnixNano())
	m.TimeFlowStartNs = m.TimeReceivedNs - uint64(r.IntN(60e9))
	m.TimeFlowEndNs = m.TimeReceivedNs - uint64(r.IntN(1e9))
	if r.IntN(4) == 0 {
		m.Etype = 0x86dd
		m.SrcAddr = []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, byte(r.IntN(16)), 0, 0, 0, 0, 0, 0, 0, byte(r.IntN(256))}
		m.DstAddr = []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, byte(r.IntN(16)), 0, 0, 0, 0, 0, 0, 0, byte(r.IntN(256))}
	} else {
		m.Etype = 0x800
		m.SrcAddr = []byte{198, 51, 100, byte(r.IntN(256))}
		m.DstAddr = []byte{203, 0, 113, byte(r.IntN(256))}
	}
	m.SrcAs = 64500 + uint32(r.IntN(8))
	m.DstAs = 64500 + uint32(r.IntN(8))
	m.Proto = [3]uint32{6, 17, 1}[r.IntN(3)]
	if m.Proto != 1 {
		m.SrcPort = uint32(1024 + r.IntN(64000))
		m.DstPort = [4]uint32{443, 80, 53, 22}[r.IntN(4)]
	}
	if m.Proto == 6 {
		m.TcpFlags = uint32(r.IntN(64))
	}
	m.InIf = uint32(1 + r.IntN(48))
	m.OutIf = uint32(1 + r.IntN(48))
	m.Packets = uint64(1 + r.IntN(100))
	m.Bytes = m.Packets * uint64(40+r.IntN(1460))
}

// Records builds n flows from a Gen seeded with seed,
// perRecord flows per Kafka record value, received from base on, 10 µs
// apart. It returns the record values and their totals.
func Records(seed int64, n, perRecord int, base time.Time) ([][]byte, Totals) {
	g := NewGen(seed)
	var m pb.FlowMessage
	var tot Totals
	var out [][]byte
	var cur []byte
	for i := range n {
		g.Next(&m, base.Add(time.Duration(i)*10*time.Microsecond))
		tot.add(&m)
		var err error
		if cur, err = pb.AppendDelimited(cur, &m); err != nil {
			panic(err) // a generated message always marshals
		}
		if (i+1)%perRecord == 0 || i == n-1 {
			out = append(out, cur)
			cur = nil
		}
	}
	return out, tot
}

// Corrupt returns n junk record values cycling through the kinds an
// inserter must survive, and how many of each kind by the reason the
// inserter reports.
func Corrupt(seed int64, n int, good []byte) ([][]byte, map[string]int) {
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	reasons := map[string]int{}
	var out [][]byte
	for i := range n {
		var v []byte
		var reason string
		kind := i % 6
		if kind == 4 && i%60 != 4 {
			kind = 0 // oversized junk is 900 kB: one in 60 is plenty
		}
		switch kind {
		case 0: // random bytes, starting with a length prefix far too large
			v = make([]byte, 50+r.IntN(200))
			for j := range v {
				v[j] = byte(r.Uint32())
			}
			v[0], v[1], v[2], v[3] = 0xff, 0xff, 0xff, 0x7f
			reason = "too_large"
		case 1: // a good frame cut short
			v = append([]byte(nil), good[:len(good)/2]...)
			reason = "truncated"
		case 2:
			v = []byte{}
			reason = "empty"
		case 3: // JSON, as a misconfigured producer would send: '{' reads as a 123-byte frame
			v = []byte(`{"type":"SFLOW_5","bytes":1500}`)
			reason = "truncated"
		case 4: // oversized junk: 900 kB of 0xff, an unterminated varint
			v = make([]byte, 900<<10)
			for j := range v {
				v[j] = 0xff
			}
			reason = "bad_length"
		case 5: // one good frame followed by one that is not a FlowMessage: the whole record goes
			v = append(append([]byte(nil), good...), 0x03, 0xff, 0xff, 0xff)
			reason = "bad_message"
		}
		reasons[reason]++
		out = append(out, v)
	}
	return out, reasons
}

// Produce writes values to topic, spread round-robin over its partitions,
// and fails the test on any error.
func Produce(t testing.TB, brokers []string, topic string, values [][]byte) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerBatchMaxBytes(1_000_000), kgo.MaxBufferedRecords(100000),
		kgo.ProducerLinger(5*time.Millisecond), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatalf("kafka producer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var firstErr error
	done := make(chan struct{}, 1)
	for _, v := range values {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush producer: %v", err)
	}
	close(done)
	if firstErr != nil {
		t.Fatalf("produce to %s: %v", topic, firstErr)
	}
}

// DB is what the database holds.
type DB struct {
	Rows, Bytes, Packets int64 // sampled sums, as stored
	RollupFlows          int64
	// RollupBytes and RollupPackets are flows_5m's scaled sums, and
	// ScaledBytes, ScaledPackets the same computed from the rows, as text:
	// they may exceed int64.
	RollupBytes, RollupPackets, ScaledBytes, ScaledPackets string
	Duplicates                                             int64 // (sampler_address, sequence_num) stored more than once
	StoredOffsets                                          int64 // sum of next_offset over kafka_offsets
	// EnrichedRollupDiff counts the rows of flows_5m_enriched and of the
	// same aggregation of flows (pgsink.EnrichedRollupSQL) found in only
	// one of the two: 0 when the rollup equals the rows.
	EnrichedRollupDiff int64
}

// Query reads the totals of the flows, flows_5m and kafka_offsets tables.
func Query(ctx context.Context, dsn string) (DB, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return DB{}, err
	}
	defer conn.Close(context.Background())
	var d DB
	err = conn.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM flows), (SELECT coalesce(sum(bytes), 0)::bigint FROM flows), (SELECT coalesce(sum(packets), 0)::bigint FROM flows),
  (SELECT coalesce(sum(flows), 0)::bigint FROM flows_5m), (SELECT coalesce(sum(bytes), 0)::text FROM flows_5m), (SELECT coalesce(sum(packets), 0)::text FROM flows_5m),
  (SELECT coalesce(sum(bytes::numeric * greatest(sampling_rate, 1)), 0)::text FROM flows),
  (SELECT coalesce(sum(packets::numeric * greatest(sampling_rate, 1)), 0)::text FROM flows),
  (SELECT count(*) FROM (SELECT 1 FROM flows GROUP BY sampler_address, sequence_num HAVING count(*) > 1) d),
  (SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets),
  (SELECT count(*) FROM ((TABLE flows_5m_enriched EXCEPT ALL (`+pgsink.EnrichedRollupSQL+`))
    UNION ALL ((`+pgsink.EnrichedRollupSQL+`) EXCEPT ALL TABLE flows_5m_enriched)) d)`).Scan(
		&d.Rows, &d.Bytes, &d.Packets, &d.RollupFlows, &d.RollupBytes, &d.RollupPackets, &d.ScaledBytes, &d.ScaledPackets, &d.Duplicates, &d.StoredOffsets,
		&d.EnrichedRollupDiff)
	return d, err
}

// Check fails the test unless the database holds exactly want, the rollup
// agrees with the rows, and no flow is stored twice.
func Check(t testing.TB, dsn string, want Totals) DB {
	t.Helper()
	// Generous: on a loaded machine, this query over the 1M rows of a
	// drain benchmark has taken over a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d, err := Query(ctx, dsn)
	if err != nil {
		t.Fatalf("query totals: %v", err)
	}
	if d.Rows != want.Flows || d.Bytes != want.Bytes || d.Packets != want.Packets {
		t.Errorf("flows table: %d rows, sum(bytes) %d, sum(packets) %d; want %d, %d, %d", d.Rows, d.Bytes, d.Packets, want.Flows, want.Bytes, want.Packets)
	}
	// flows_5m holds scaled sums: bytes and packets x greatest(sampling_rate, 1).
	if d.RollupFlows != d.Rows || d.RollupBytes != d.ScaledBytes || d.RollupPackets != d.ScaledPackets {
		t.Errorf("flows_5m: flows %d, scaled bytes %s, scaled packets %s; flows table: %d, %s, %s", d.RollupFlows, d.RollupBytes, d.RollupPackets, d.Rows, d.ScaledBytes, d.ScaledPackets)
	}
	if d.EnrichedRollupDiff != 0 {
		t.Errorf("flows_5m_enriched: %d rows differ from the aggregation of flows", d.EnrichedRollupDiff)
	}
	if d.Duplicates != 0 {
		t.Errorf("%d (sampler_address, sequence_num) pairs stored more than once", d.Duplicates)
	}
	return d
}

// WaitRows polls until the flows table holds want rows, or fails after
// timeout. An error while the database is down counts as not yet.
func WaitRows(t testing.TB, dsn string, want int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last DB
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last, lastErr = Query(ctx, dsn)
		cancel()
		if lastErr == nil && last.Rows >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("after %s the flows table holds %d rows, want %d (last error: %v)", timeout, last.Rows, want, lastErr)
}

// String formats totals for logs.
func (t Totals) String() string {
	return fmt.Sprintf("%d flows, %d bytes, %d packets", t.Flows, t.Bytes, t.Packets)
}

// ProduceFlows produces n generated flows (as Records would make them) in
// chunks, so a million flows never sit in memory at once.
func ProduceFlows(t testing.TB, brokers []string, topic string, seed int64, n, perRecord int, base time.Time) Totals {
	t.Helper()
	const chunk = 100_000
	g := NewGen(seed)
	var tot Totals
	var m pb.FlowMessage
	for done := 0; done < n; {
		k := min(chunk, n-done)
		var values [][]byte
		var cur []byte
		for i := range k {
			g.Next(&m, base.Add(time.Duration(done+i)*10*time.Microsecond))
			tot.add(&m)
			cur, _ = pb.AppendDelimited(cur, &m)
			if (i+1)%perRecord == 0 || i == k-1 {
				values = append(values, cur)
				cur = nil
			}
		}
		Produce(t, brokers, topic, values)
		done += k
	}
	return tot
}
