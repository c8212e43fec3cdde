package mocker

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// flowSource makes the flows of one Run: the generator's normal traffic,
// the attacks of Config.Attacks on top, stamped with the wall clock or the
// simulated one (Config.SimulateStart).
type flowSource struct {
	gen      *Generator
	mix      *attackMix // nil: no attack
	simStart time.Time  // zero: wall clock
	rate     float64
	normal   uint64 // normal flows made so far (the simulated clock)
}

func (m *Mocker) newFlowSource(gen *Generator) *flowSource {
	s := &flowSource{gen: gen, simStart: m.cfg.SimulateStart, rate: m.cfg.Rate}
	if len(m.cfg.Attacks) > 0 {
		s.mix = newAttackMix(gen, m.plan, m.cfg.Attacks)
		m.mix.Store(s.mix)
	}
	return s
}

// appendFlows appends n length-delimited flows to buf, received at now
// (wall clock), adds each to its exporter's tally (the summary's truth),
// and returns how many of them are normal traffic.
func (s *flowSource) appendFlows(buf []byte, m *pb.FlowMessage, n uint64, now time.Time, infos []exporterInfo, tally []Counts) ([]byte, uint64) {
	if s.mix == nil && s.simStart.IsZero() {
		// Today's path: one clock reading per record.
		for range n {
			s.gen.Next(m, now)
			buf, _ = pb.AppendDelimited(buf, m) // cannot fail: a generated flow is always valid
			countFlow(infos, tally, m)
		}
		return buf, n
	}
	var normal uint64
	for range n {
		t := now
		if !s.simStart.IsZero() {
			t = s.simStart.Add(time.Duration(math.Round(float64(s.normal) * float64(time.Second) / s.rate)))
		}
		if s.mix == nil || !s.mix.next(m, t) {
			if s.mix == nil {
				s.gen.Next(m, t)
			}
			normal++
			s.normal++
		}
		buf, _ = pb.AppendDelimited(buf, m)
		countFlow(infos, tally, m)
	}
	return buf, normal
}

// countFlow adds a flow to the tally of the exporter that sent it.
func countFlow(infos []exporterInfo, tally []Counts, m *pb.FlowMessage) {
	if i := exporterIndex(infos, m.SamplerAddress); i >= 0 {
		tally[i].addFlow(m.Bytes, m.Packets, m.SamplingRate)
	}
}

// AttackSummaries reports, per Config.Attacks entry in order, what the
// mocker has injected so far (all zero before Run starts producing).
func (m *Mocker) AttackSummaries() []AttackSummary {
	if mix := m.mix.Load(); mix != nil {
		return mix.summaries()
	}
	out := make([]AttackSummary, len(m.cfg.Attacks))
	for i, a := range m.cfg.Attacks {
		out[i] = AttackSummary{Target: a.Target.String(), Vector: a.Vector}
	}
	return out
}

// validateAttacks checks Attacks and SimulateStart (defaults applied).
func (c Config) validateAttacks() []error {
	var errs []error
	for i, a := range c.Attacks {
		if err := a.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("Config.Attacks[%d] (%s): %w", i, a, err))
		}
	}
	if len(c.Attacks) > 0 && c.Addresses != AddressesRealistic {
		errs = append(errs, fmt.Errorf("Config.Attacks need the %s address plan: attacks come from its real networks", AddressesRealistic))
	}
	// The router protocols go through a collector that stamps its own
	// receive time, and their sender has no attack mix yet.
	if c.Output != "" && c.Output != OutputKafka && (len(c.Attacks) > 0 || !c.SimulateStart.IsZero()) {
		errs = append(errs, fmt.Errorf("Config.Attacks and Config.SimulateStart work with Output %s only, not %s", OutputKafka, c.Output))
	}
	if !c.SimulateStart.IsZero() && c.Rate <= 0 {
		errs = append(errs, errors.New("Config.SimulateStart needs Config.Rate > 0: the simulated clock advances 1/Rate per flow"))
	}
	return errs
}
