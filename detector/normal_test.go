package detector

import (
	"fmt"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestNormalTrafficNoAlert: ten minutes of event time of the mocker's
// realistic traffic, at its default rate (1000 flows/s) and at ten times
// it, raise no alert with the built-in thresholds. The flows are as the
// enricher passes them on (sampling rate filled), without the names.
func TestNormalTrafficNoAlert(t *testing.T) {
	plan, err := mocker.DemoPlan()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seed int64
		rate int
	}{{1, 1000}, {1, 10000}, {2, 10000}, {3, 10000}} {
		t.Run(fmt.Sprintf("seed%d/%dflows-per-s", c.seed, c.rate), func(t *testing.T) {
			if testing.Short() && c.seed > 1 {
				t.Skip("short")
			}
			g := mocker.NewPlanGenerator(c.seed, plan)
			e := newTestEngine(t, testConfig(), nil)
			var m pb.FlowMessage
			n := 600 * c.rate
			alerts := 0
			for i := range n {
				g.Next(&m, t0.Add(time.Duration(i)*time.Second/time.Duration(c.rate)))
				if m.SamplingRate == 0 {
					// The NetFlow v5 exporter, edge2.par1: the enricher
					// fills its rate from config/demo-exporters.yml.
					m.SamplingRate = 2000
				}
				e.Add(&m, 0, wall)
				for _, a := range e.Alerts() {
					alerts++
					if alerts <= 5 {
						t.Errorf("alert on normal traffic: %+v", a)
					}
				}
			}
			e.Tick(wall.Add(time.Hour)) // close every step
			alerts += len(e.Alerts())
			if alerts != 0 {
				t.Errorf("%d alerts on normal traffic, want 0", alerts)
			}
			if got := e.Take(); got.Flows != uint64(n) || got.Dropped != [numDrops]uint64{} {
				t.Errorf("counts %+v, want %d flows, no drop", got, n)
			}
		})
	}
}
