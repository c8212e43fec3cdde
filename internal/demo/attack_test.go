package demo

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// TestDemoAttack runs the demo with a DNS amplification attack on
// customer-c's 203.0.113.7, from 1 s to 6 s: the in-process detector finds
// it, the live view lists it while it lasts and "none" at the end, and
// the inserter stores exactly one start and one end alert for it, and no
// other attack.
func TestDemoAttack(t *testing.T) {
	pg := startPG(t)
	ctx := context.Background()
	var out bytes.Buffer
	attack := mocker.Attack{Target: netip.MustParseAddr("203.0.113.7"), Vector: mocker.VectorDNSAmp,
		Start: time.Second, Duration: 5 * time.Second, PPS: 3e6}
	sum, err := Run(ctx, Config{
		PostgresDSN: pg.DSN(),
		Rate:        1000,
		// The end alert is decided 10 s (EndAfter) after the attack, once
		// the event time is 5 s (Lateness) further: about 21 s in.
		Duration: 30 * time.Second,
		Refresh:  500 * time.Millisecond,
		Seed:     3,
		Attacks:  []mocker.Attack{attack},
		// The demo's files, so the target is named (customer-c).
		NetworksFile:  "../../config/demo-networks.yml",
		ExportersFile: "../../config/demo-exporters.yml",
	}, &out, testLogger(t))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if sum.Stored != sum.Produced {
		t.Fatalf("produced %d, stored %d", sum.Produced, sum.Stored)
	}
	o := out.String()
	for _, want := range []string{"The detector reads topic flows-enriched and writes its alerts to topic alerts",
		"ATTACK dns-amp on 203.0.113.7 (customer-c) since ", "Attacks in progress: none\n"} {
		if !strings.Contains(o, want) {
			t.Errorf("the view lacks %q:\n%s", want, o)
		}
	}
	if i, j := strings.Index(o, "ATTACK dns-amp"), strings.LastIndex(o, "Attacks in progress: none"); i < 0 || j < i {
		t.Errorf("the view does not end with no attack in progress after showing it:\n%s", o)
	}

	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT event, target, target_net, vector FROM alerts WHERE event <> 'update' ORDER BY at")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var e, tg, net, v string
		err := r.Scan(&e, &tg, &net, &v)
		return strings.Join([]string{e, tg, net, v}, " "), err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"start 203.0.113.7 customer-c dns-amp", "end 203.0.113.7 customer-c dns-amp"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("alerts table holds %q, want %q", got, want)
	}
}
