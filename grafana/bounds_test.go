package grafana

import (
	"context"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// exactInt converts an integer-valued numeric or int column to a big.Int.
func exactInt(t *testing.T, v any) *big.Int {
	t.Helper()
	switch x := v.(type) {
	case int64:
		return big.NewInt(x)
	case pgtype.Numeric:
		if !x.Valid || x.NaN || x.InfinityModifier != 0 {
			t.Fatalf("numeric %v is not a number", x)
		}
		n := new(big.Int).Set(x.Int)
		if x.Exp >= 0 {
			return n.Mul(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(x.Exp)), nil))
		}
		d := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-x.Exp)), nil)
		q, r := new(big.Int).QuoRem(n, d, new(big.Int))
		if r.Sign() != 0 {
			t.Fatalf("numeric %v is not an integer", x)
		}
		return q
	}
	t.Fatalf("%v (%T) is not an integer", v, v)
	return nil
}

// TestPostgresQueriesAtBounds stores 20,000 flows at every bound at once
// (scaled bytes and packets 2^50 each), all in one 5-minute slot and
// rollup key, and runs every panel of the PostgreSQL dashboard over the
// hour (rows) and the day (flows_5m, flows_5m_enriched): none may fail with "out of range",
// and the totals are exact, 20,000 x 2^50 being past int64 and uint64.
func TestPostgresQueriesAtBounds(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	if pg == nil {
		return
	}
	dsn := pg.CreateDB(t, "grafana_bounds")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sink, err := pgsink.New(pgsink.Config{DSN: dsn, Group: "grafana-test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if err := sink.CreateSchema(ctx); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC().Truncate(5 * time.Minute)
	at := end.Add(-10 * time.Minute)
	const n = 20000
	long := func(c byte) string { return strings.Repeat(string(c), pgsink.MaxNameBytes) }
	lim := pgsink.NewLimits(end, 0, 10*time.Minute)
	b := pgsink.NewBatch("flows", 0)
	for i := range n {
		m := &pb.FlowMessage{TimeReceivedNs: uint64(at.UnixNano()) + uint64(i), Bytes: 1 << 48, Packets: 1 << 48, SamplingRate: 4,
			SrcAs: 1<<32 - 1, DstAs: 1<<32 - 1, Etype: 0x800, Proto: 6, DstPort: 443, SequenceNum: uint32(i),
			SrcAddr: []byte{192, 0, 2, byte(i % 4)}, DstAddr: []byte{198, 51, 100, 1}, SamplerAddress: []byte{10, 0, 0, 1},
			// Every enrichment text at its longest, so the Enrichment panels
			// have rows (one key each) and their sums are checked too.
			SrcCountry: "US", DstCountry: "DE", SrcAsName: long('a'), DstAsName: long('a'), DstNetName: long('c'), DstNetSite: long('s'),
			ExporterName: long('e'), InIfName: long('i'), OutIfName: long('o'), InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL,
			OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL, SamplingRateFromExporter: true}
		if err := pgsink.ValidateFlow(m, lim); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
		b.BeginRecord(int64(i))
		b.AddFlow(m)
		b.EndRecord()
	}
	if res, err := sink.Write(ctx, b); err != nil || res.Flows != n {
		t.Fatalf("write: %+v %v", res, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	total := new(big.Int).Lsh(big.NewInt(n), 50)
	for _, qc := range []queryContext{
		{from: end.Add(-time.Hour), to: end, interval: time.Minute, vars: map[string]string{}},
		{from: end.Add(-24 * time.Hour), to: end, interval: 2 * time.Minute, vars: map[string]string{}},
	} {
		for _, q := range sqlQueries(t, "dashboards/traffic-postgres.json") {
			if q.panel == "Attacks" {
				continue // reads the alerts, not the flows: attacks_test.go
			}
			t.Run(qc.to.Sub(qc.from).String()+"/"+q.panel, func(t *testing.T) {
				cols, rows := runPostgres(t, conn, q, qc)
				if len(rows) == 0 {
					t.Fatalf("no rows")
				}
				sumCol := func(name string) *big.Int {
					s := new(big.Int)
					for i, c := range cols {
						if c == name {
							for _, r := range rows {
								s.Add(s, exactInt(t, r[i]))
							}
							return s
						}
					}
					t.Fatalf("no column %q in %v", name, cols)
					return nil
				}
				switch q.panel {
				case "IPv4 / IPv6", "Top ports", "Protocols":
					if got := sumCol("Bytes"); got.Cmp(total) != 0 {
						t.Errorf("bytes %s, want %s", got, total)
					}
				case "Top source countries", "Top destination countries", "Top customers", "Top sites":
					if got := sumCol("ScaledBytes"); got.Cmp(total) != 0 {
						t.Errorf("bytes %s, want %s", got, total)
					}
				case "Top AS by name", "Traffic per exporter and interface":
					// Each flow counts twice: source and destination AS, input
					// and output interface.
					if got, want := sumCol("ScaledBytes"), new(big.Int).Lsh(total, 1); got.Cmp(want) != 0 {
						t.Errorf("bytes %s, want %s", got, want)
					}
				case "Flows sampled at the exporters file's rate":
					if len(rows) != 100 {
						t.Errorf("%d rows, want the latest 100", len(rows))
					}
				case "Top AS pairs", "Top sources", "Top destinations":
					if got := sumCol("Bytes"); got.Cmp(total) != 0 {
						t.Errorf("bytes %s, want %s", got, total)
					}
					if got := sumCol("Packets"); got.Cmp(total) != 0 {
						t.Errorf("packets %s, want %s", got, total)
					}
				}
			})
		}
	}
}
