package inserter

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// stored is what the flows table holds of one flow's enrichment, and the
// collector fields the enricher may override.
type stored struct {
	SrcCountry, DstCountry, SrcAsName, DstAsName, SrcNetName, DstNetName string
	SrcNetRole, DstNetRole, SrcNetSite, DstNetSite, ExporterName         string
	InIfName, OutIfName, InIfDescription, OutIfDescription               string
	InIfSpeed, OutIfSpeed                                                int64
	InIfBoundary, OutIfBoundary                                          int16
	SamplingRateFromExporter                                             bool
	SamplingRate, SrcAs, DstAs                                           int64
}

func storedOf(m *pb.FlowMessage) stored {
	return stored{m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName, m.SrcNetName, m.DstNetName,
		m.SrcNetRole, m.DstNetRole, m.SrcNetSite, m.DstNetSite, m.ExporterName, m.InIfName, m.OutIfName,
		m.InIfDescription, m.OutIfDescription, int64(m.InIfSpeed), int64(m.OutIfSpeed),
		int16(m.InIfBoundary), int16(m.OutIfBoundary), m.SamplingRateFromExporter,
		int64(m.SamplingRate), int64(m.SrcAs), int64(m.DstAs)}
}

type flowKey struct {
	sampler netip.Addr
	seq     int64
}

// TestEnrichedFieldsArriveEqual: enriched frames, as the enricher writes
// them (pb.AppendEnrichedFrame, one and ten flows per record), and plain
// flows on the same topic go through the real inserter (kfake); every
// stored row's enrichment columns, sampling rate and AS numbers equal the
// fields decoded from its frame, keyed by (sampler_address, sequence_num),
// and the rollups equal the rows.
func TestEnrichedFieldsArriveEqual(t *testing.T) {
	const topic = "flows-enriched"
	brokers := testenv.FakeKafka(t, 3, topic)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	base := time.Now().Add(-time.Hour)
	single, tot1 := flowtest.EnrichedRecords(1, 6000, 1, base)
	multi, tot2 := flowtest.EnrichedRecords(2, 4000, 10, base.Add(time.Minute))
	plain, tot3 := flowtest.Records(3, 2000, 5, base.Add(2*time.Minute))
	values := append(append(single, multi...), plain...)
	flowtest.Produce(t, brokers, topic, values)
	want := flowtest.Totals{Flows: tot1.Flows + tot2.Flows + tot3.Flows, Bytes: tot1.Bytes + tot2.Bytes + tot3.Bytes,
		Packets: tot1.Packets + tot2.Packets + tot3.Packets}

	// What the frames say, decoded as any reader would.
	expect := map[flowKey]stored{}
	var m pb.FlowMessage
	var enriched, fromExporter int
	for _, v := range values {
		if err := pb.UnmarshalRecord(v, &m, func(m *pb.FlowMessage) error {
			a, _ := netip.AddrFromSlice(m.SamplerAddress)
			expect[flowKey{a, int64(m.SequenceNum)}] = storedOf(m)
			if m.ExporterName != "" {
				enriched++
			}
			if m.SamplingRateFromExporter {
				fromExporter++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if int64(len(expect)) != want.Flows || enriched != 10000 || fromExporter == 0 {
		t.Fatalf("test data: %d distinct flows (want %d), %d enriched (want 10000), %d with the exporter's rate", len(expect), want.Flows, enriched, fromExporter)
	}

	r := start(t, Config{Brokers: brokers, Topic: topic, Group: "g", PostgresDSN: dsn, FlushCount: 3000, FlushInterval: 200 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), time.Minute)
	r.stop(t)
	flowtest.Check(t, dsn, want)

	conn := pgConn(t, dsn)
	rows, err := conn.Query(context.Background(), `SELECT sampler_address, sequence_num, src_country, dst_country, src_as_name, dst_as_name,
  src_net_name, dst_net_name, src_net_role, dst_net_role, src_net_site, dst_net_site, exporter_name, in_if_name, out_if_name,
  in_if_description, out_if_description, in_if_speed, out_if_speed, in_if_boundary, out_if_boundary, sampling_rate_from_exporter,
  sampling_rate, src_as, dst_as FROM flows`)
	if err != nil {
		t.Fatal(err)
	}
	var k flowKey
	var sampler netip.Prefix
	var g stored
	n, bad := 0, 0
	if _, err := pgx.ForEachRow(rows, []any{&sampler, &k.seq, &g.SrcCountry, &g.DstCountry, &g.SrcAsName, &g.DstAsName,
		&g.SrcNetName, &g.DstNetName, &g.SrcNetRole, &g.DstNetRole, &g.SrcNetSite, &g.DstNetSite, &g.ExporterName, &g.InIfName, &g.OutIfName,
		&g.InIfDescription, &g.OutIfDescription, &g.InIfSpeed, &g.OutIfSpeed, &g.InIfBoundary, &g.OutIfBoundary, &g.SamplingRateFromExporter,
		&g.SamplingRate, &g.SrcAs, &g.DstAs}, func() error {
		n++
		k.sampler = sampler.Addr()
		w, ok := expect[k]
		if !ok || g != w {
			if bad++; bad <= 5 {
				t.Errorf("flow %v (in the frames: %v):\n stored %+v\n frame  %+v", k, ok, g, w)
			}
		}
		delete(expect, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if int64(n) != want.Flows || bad != 0 || len(expect) != 0 {
		t.Errorf("%d rows (want %d), %d differ from their frame, %d frames not stored", n, want.Flows, bad, len(expect))
	}
}
