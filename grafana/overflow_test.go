package grafana

import (
	"encoding/json"
	"math"
	"math/big"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/chdb"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestClickHouseQueriesMaxFlows runs every ClickHouse panel over 20,000
// flows of the largest size the views accept (2^48 bytes and packets at
// sampling rate 4: 2^50 each once scaled), one source, destination, port
// and AS pair. Their scaled sum, 20000 * 2^50, is past UInt64: a panel
// that summed in UInt64 would show a wrapped, far smaller number.
func TestClickHouseQueriesMaxFlows(t *testing.T) {
	s := chdb.Start(t)
	if s == nil {
		return
	}
	if err := s.ApplySchema("../compose/clickhouse", true); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	end := time.Now().UTC().Truncate(5 * time.Minute)
	start := end.Add(-time.Hour)
	var data []byte
	for i := 0; i < n; i++ {
		ns := uint64(start.Add(time.Duration(i) * time.Hour / n).UnixNano())
		m := &pb.FlowMessage{
			Type: pb.FlowMessage_IPFIX, TimeReceivedNs: ns, TimeFlowStartNs: ns - 1e9, TimeFlowEndNs: ns,
			SequenceNum: uint32(i), SamplingRate: 4, SamplerAddress: netip.MustParseAddr("192.0.2.250").AsSlice(),
			SrcAddr: netip.MustParseAddr("192.0.2.1").AsSlice(), DstAddr: netip.MustParseAddr("198.51.100.1").AsSlice(),
			Bytes: 1 << 48, Packets: 1 << 48, Etype: 0x800, Proto: 6, SrcPort: 40000, DstPort: 443,
			SrcAs: 64500, DstAs: 64501,
		}
		// Enriched, so that the Enrichment panels sum them too.
		data = pb.AppendEnrichedFrame(data, m.AppendWire(nil), &maxEnrichment)
	}
	proto, err := filepath.Abs("../pb/flow.proto")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InsertProtobuf("flows", data, proto+":FlowMessage"); err != nil {
		t.Fatal(err)
	}
	want := new(big.Int).Lsh(big.NewInt(n), 50) // scaled bytes, and packets
	wantF, _ := new(big.Float).SetInt(want).Float64()

	qc := queryWindow(end)
	for _, q := range sqlQueries(t, "dashboards/traffic-clickhouse.json") {
		if q.panel == "Attacks" {
			continue // reads the alerts, not the flows: attacks_test.go
		}
		t.Run(q.panel+"/"+q.refID, func(t *testing.T) {
			sql, err := expandClickHouse(q.sql, qc)
			if err != nil {
				t.Fatalf("expand: %v", err)
			}
			cols, rows := runClickHouse(t, s, sql)
			sums := map[string]*big.Float{}
			for _, row := range rows {
				for i, v := range row {
					num, ok := v.(json.Number)
					if !ok {
						continue
					}
					f, _, err := big.ParseFloat(num.String(), 10, 200, big.ToNearestEven)
					if err != nil {
						t.Fatalf("column %s: %v", cols[i], err)
					}
					if sums[cols[i]] == nil {
						sums[cols[i]] = new(big.Float).SetPrec(200)
					}
					sums[cols[i]].Add(sums[cols[i]], f)
				}
			}
			// Panels that count a flow twice (on both ASes, on both
			// interfaces) or list only some flows.
			ratio := [2]int64{1, 1}
			switch q.panel {
			case "Top AS by name", "Traffic per interface and boundary (bits/s)", "Traffic per exporter and interface":
				ratio = [2]int64{2, 1}
			case "Flows sampled at the exporters file's rate":
				ratio = [2]int64{100, n} // its LIMIT
			}
			want := new(big.Int).Div(new(big.Int).Mul(want, big.NewInt(ratio[0])), big.NewInt(ratio[1]))
			wantF := wantF * float64(ratio[0]) / float64(ratio[1])
			checked := 0
			for col, per := range map[string]float64{
				// column -> what one scaled byte or packet adds to it
				"ScaledBytes": 1, "ScaledPackets": 1, "Bytes": 1,
				"bps": 8 / qc.interval.Seconds(), "pps": 1 / qc.interval.Seconds(),
			} {
				sum, ok := sums[col]
				if !ok {
					continue
				}
				checked++
				got, _ := sum.Float64()
				if exp := wantF * per; math.Abs(got-exp) > exp*1e-9 {
					t.Errorf("%s adds up to %.6g, want %.6g (20000 * 2^50 scaled, x %g, x %d/%d)", col, got, exp, per, ratio[0], ratio[1])
				}
				// Exact for the integer sums (tables over one row).
				if per == 1 && sum.IsInt() {
					if i, _ := sum.Int(nil); i.Cmp(want) != 0 {
						t.Errorf("%s = %s, want exactly %s", col, i, want)
					}
				}
			}
			if q.panel != "Rejected records" && checked == 0 {
				t.Errorf("no traffic column among %v", cols)
			}
		})
	}
}

// maxEnrichment names every dimension of the Enrichment panels, and says
// the flows' sampling rate came from the exporters file.
var maxEnrichment = pb.Enrichment{
	SrcCountry: "US", DstCountry: "DE", SrcAsName: "EXAMPLE-A", DstAsName: "EXAMPLE-B",
	DstNetName: "customer-a", DstNetSite: "par1", ExporterName: "edge1.par1",
	InIfName: "et-0/0/1", OutIfName: "ae10", InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL,
	OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL, SamplingRate: 4, SamplingRateFromExporter: true,
}
