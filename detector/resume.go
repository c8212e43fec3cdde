package detector

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// resumeQuiet is how long the alerts topic must give nothing more before
// the detector takes it as read.
const resumeQuiet = time.Second

// resume reads the alerts topic (read_committed) and takes up the attacks
// whose last alert is not an end: a restarted detector continues them,
// same id, instead of starting them again and leaving them without end.
func (d *Detector) resume(ctx context.Context) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.cfg.Brokers...), kgo.ConsumeTopics(d.cfg.AlertsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, fmt.Errorf("read the alerts topic to resume attacks: %w", err)
	}
	defer cl.Close()
	last := map[string]Alert{}
	var order []string
	for {
		pctx, cancel := context.WithTimeout(ctx, resumeQuiet)
		f := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		n := 0
		f.EachRecord(func(r *kgo.Record) {
			n++
			var a Alert
			if json.Unmarshal(r.Value, &a) != nil || a.ID == "" {
				return // not ours: skip
			}
			if _, ok := last[a.ID]; !ok {
				order = append(order, a.ID)
			}
			last[a.ID] = a
		})
		if n == 0 {
			break
		}
	}
	resumed := 0
	for _, id := range order {
		if a := last[id]; a.Event != EventEnd && d.eng.Resume(a) {
			resumed++
		}
	}
	return resumed, nil
}

// Resume takes up an attack from its last alert: the target and vector
// are in an attack from the alert's started, with its figures as the
// sums so far and its peaks. It reports false for an alert it cannot
// place (an unknown vector, a full table).
func (e *Engine) Resume(a Alert) bool {
	v, ok := ParseVector(a.Vector)
	if !ok || a.At.IsZero() {
		return false
	}
	started := a.At
	if a.Started != "" {
		if t, err := time.Parse(time.RFC3339Nano, a.Started); err == nil {
			started = t
		}
	}
	var en *entry
	if addr, err := netip.ParseAddr(a.Target); err == nil && a.Target != a.TargetNet {
		k := addr.As16()
		if i, ok := e.idx[k]; ok {
			en = &e.ents[i]
		} else if i := e.take(k, e.stepOf(a.At.UnixNano())); i >= 0 {
			en = &e.ents[i]
		}
		if en != nil {
			en.net = a.TargetNet
		}
	} else {
		en = e.nets[a.Target]
		if en == nil {
			en = e.newNetEntry(a.Target)
			e.nets[a.Target] = en
		}
	}
	if en == nil {
		return false
	}
	k := e.stepOf(a.At.UnixNano()) - 1 // the step the alert was decided at
	first := e.stepOf(started.UnixNano())
	steps := max(k-first+1, 1)
	per := float64(e.stepNs) / 1e9
	perStep := func(bps, pps, flows uint64) counters {
		return counters{uint64(float64(bps) * per), uint64(float64(pps) * per), uint64(float64(flows) * per)}
	}
	s := &en.vs[v]
	*s = vstate{active: true, up: e.startSteps, id: a.ID, first: first, lastUpdate: k, steps: steps, stepsAbove: steps}
	mean := perStep(a.Bps, a.Pps, a.Flows)
	s.sum = counters{satMul(mean.bits, uint64(steps)), satMul(mean.pkts, uint64(steps)), satMul(mean.flows, uint64(steps))}
	s.sumAbove = s.sum
	s.peak = perStep(a.PeakBps, a.PeakPps, a.PeakFlows)
	s.peak.maxC(mean)
	en.last = max(en.last, k)
	// The steps up to k were decided before the restart, with flows that
	// are not read again: decided again, they would look quiet.
	if !e.started {
		e.floor = max(e.floor, k+1)
	}
	return true
}
