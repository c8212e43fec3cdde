package detector

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Reasons a decoded flow is not counted, the reason label of
// flowpipeline_detector_flows_dropped_total.
const (
	DropLate       = "late"        // time_received before the oldest open step (see Config.Lateness)
	DropFuture     = "future"      // time_received more than Config.MaxFuture after the wall clock
	DropNoTime     = "no_time"     // time_received is 0
	DropBadAddress = "bad_address" // dst_addr is neither 4 nor 16 bytes
)

// DropReasons lists the reasons of flows_dropped_total.
var DropReasons = []string{DropLate, DropFuture, DropNoTime, DropBadAddress}

const (
	dropLate = iota
	dropFuture
	dropNoTime
	dropBadAddress
	numDrops
)

// Counts are the engine's counters since the last Take: plain integers on
// the hot path, added to the Prometheus metrics once per batch.
type Counts struct {
	Flows            uint64 // flows counted
	Dropped          [numDrops]uint64
	ZeroSamplingRate uint64 // flows with sampling_rate 0, counted as 1
	Evictions        uint64 // tracked targets replaced by a heavier newcomer
	TargetsFull      uint64 // admissions refused: every tracked target was in an attack
}

// counters are one step's sums for one vector; saturating.
type counters struct{ bits, pkts, flows uint64 }

func (c *counters) add(b, p, f uint64) {
	c.bits, c.pkts, c.flows = satAdd(c.bits, b), satAdd(c.pkts, p), satAdd(c.flows, f)
}

func (c *counters) addC(o counters) { c.add(o.bits, o.pkts, o.flows) }

func (c *counters) maxC(o counters) {
	c.bits, c.pkts, c.flows = max(c.bits, o.bits), max(c.pkts, o.pkts), max(c.flows, o.flows)
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

func satMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// vstate is the attack state of one target and vector.
type vstate struct {
	up, down   int32 // consecutive steps above the threshold (before start), below it (after)
	active     bool
	first      int64 // the first step above the threshold
	lastUpdate int64 // step of the last start or update alert
	id         string
	sum        counters // since first
	steps      int64
	sumAbove   counters // up to the last step not below
	stepsAbove int64
	peak       counters // per-step maxima
	tops       *tops
}

// entry is one target: a destination address, or a network's aggregate.
type entry struct {
	key   [16]byte
	net   string // the target's dst_net_name (a network entry: its name)
	isNet bool
	used  bool
	last  int64      // the latest step with a flow
	stamp []int64    // ring: the step each slot holds
	ring  []counters // ring slots × NumVectors
	vs    [NumVectors]vstate
}

func (e *entry) slot(k int64, r int) []counters {
	i := int(k % int64(r))
	c := e.ring[i*int(NumVectors) : (i+1)*int(NumVectors)]
	if e.stamp[i] != k {
		e.stamp[i] = k
		clear(c)
	}
	return c
}

// get returns the counters of step k for v (zero when the slot holds another step).
func (e *entry) get(k int64, r int, v Vector) counters {
	i := int(k % int64(r))
	if e.stamp[i] != k {
		return counters{}
	}
	return e.ring[i*int(NumVectors)+int(v)]
}

func (e *entry) hasState() bool {
	for i := range e.vs {
		if e.vs[i].active || e.vs[i].up > 0 {
			return true
		}
	}
	return false
}

// limits are one vector's thresholds per step, and the levels at which
// the engine starts collecting top sources (half the limits).
type limits struct {
	bits, pkts, flows    uint64 // 0: unchecked
	hbits, hpkts, hflows uint64 // 0: never hot
	set                  bool
	inv                  [3]float64 // sketch score units per bit, packet, flow
}

func makeLimits(l Limit, step time.Duration) limits {
	per := func(rate uint64) uint64 {
		if rate == 0 {
			return 0
		}
		return max(uint64(math.Ceil(float64(rate)*step.Seconds())), 1)
	}
	x := limits{bits: per(l.Bps), pkts: per(l.Pps), flows: per(l.Flows), set: l.set()}
	half := func(v uint64) uint64 {
		if v == 0 {
			return 0
		}
		return max(v/2, 1)
	}
	x.hbits, x.hpkts, x.hflows = half(x.bits), half(x.pkts), half(x.flows)
	for i, v := range []uint64{x.bits, x.pkts, x.flows} {
		if v != 0 {
			x.inv[i] = scoreUnit / float64(v)
		}
	}
	return x
}

func (l *limits) exceeded(c counters) bool {
	return (l.bits != 0 && c.bits >= l.bits) || (l.pkts != 0 && c.pkts >= l.pkts) || (l.flows != 0 && c.flows >= l.flows)
}

func (l *limits) hot(c counters) bool {
	return (l.hbits != 0 && c.bits >= l.hbits) || (l.hpkts != 0 && c.pkts >= l.hpkts) || (l.hflows != 0 && c.flows >= l.hflows)
}

// below: every checked rate under its limit times h.
func (l *limits) below(c counters, h float64) bool {
	under := func(v, lim uint64) bool { return lim == 0 || float64(v) < float64(lim)*h }
	return under(c.bits, l.bits) && under(c.pkts, l.pkts) && under(c.flows, l.flows)
}

// The count-min sketch of untracked destinations: per open step, depth
// rows of width counters of a score in units of 1/scoreUnit of the
// destination's nearest threshold; a destination whose estimate reaches
// admitScore within one step becomes a tracked target.
const (
	scoreUnit   = 1024
	admitScore  = scoreUnit / 8
	sketchDepth = 4
	sketchWidth = 1 << 16
	evictSample = 8
)

type sketch struct {
	step int64
	c    []uint32 // depth × width
}

// Engine turns flows into alerts. It is deterministic: the alerts depend
// on the flows' time_received only, not on the wall clock, except that
// when no flow arrives for Config.Idle the event time advances with the
// wall clock (Tick). It is not safe for concurrent use.
type Engine struct {
	cfg                  Config
	th                   *Thresholds
	addrLim              [NumVectors]limits
	netLim               map[string]*[NumVectors]limits
	stepNs               int64
	window, open, r      int
	startSteps, endSteps int32
	updateSteps          int64
	maxT                 int64 // newest time_received seen (ns), over every partition
	closed               int64 // steps before this are closed; valid when started
	started              bool
	lastWall             time.Time // of the last flow
	parts                map[int32]*pstate
	lastPart             int32
	lastPS               *pstate
	floor                int64 // the first step not decided before (Resume)
	sk                   []sketch
	idx                  map[[16]byte]int32
	ents                 []entry
	free                 []int32
	nets                 map[string]*entry
	topsPool             []*tops
	topsLive, topsMax    int
	rng                  uint64
	out                  []Alert
	counts               Counts
}

// NewEngine builds an engine for cfg (its detection fields) and thresholds
// th (nil: DefaultThresholds). Its memory is allocated here and bounded
// by Config.Targets.
func NewEngine(cfg Config, th *Thresholds) (*Engine, error) {
	if errs := cfg.validateDetection(); len(errs) > 0 {
		return nil, errs[0]
	}
	e := &Engine{cfg: cfg, stepNs: int64(cfg.Step)}
	e.window = int(cfg.Window / cfg.Step)
	// Open steps: from the watermark minus the lateness to the newest flow.
	e.open = int((cfg.Lateness+cfg.MaxSkew+cfg.Step-1)/cfg.Step) + 2
	e.r = e.window + e.open + 1
	e.parts = map[int32]*pstate{}
	e.startSteps = int32(cfg.StartSteps)
	e.endSteps = int32(cfg.EndAfter / cfg.Step)
	e.updateSteps = int64(cfg.UpdateEvery / cfg.Step)
	e.sk = make([]sketch, e.open+1)
	for i := range e.sk {
		e.sk[i] = sketch{step: -1, c: make([]uint32, sketchDepth*sketchWidth)}
	}
	e.ents = make([]entry, cfg.Targets)
	stamps := make([]int64, cfg.Targets*e.r)
	ring := make([]counters, cfg.Targets*e.r*int(NumVectors))
	for i := range e.ents {
		e.ents[i].stamp = stamps[i*e.r : (i+1)*e.r : (i+1)*e.r]
		e.ents[i].ring = ring[i*e.r*int(NumVectors) : (i+1)*e.r*int(NumVectors) : (i+1)*e.r*int(NumVectors)]
		for j := range e.ents[i].stamp {
			e.ents[i].stamp[j] = -1
		}
	}
	e.free = make([]int32, 0, cfg.Targets)
	for i := cfg.Targets - 1; i >= 0; i-- {
		e.free = append(e.free, int32(i))
	}
	e.idx = make(map[[16]byte]int32, cfg.Targets)
	e.topsMax = cfg.Targets
	e.rng = 0x9e3779b97f4a7c15
	if th == nil {
		th = DefaultThresholds()
	}
	e.SetThresholds(th)
	return e, nil
}

// SetThresholds swaps the thresholds in; states and counts are kept.
func (e *Engine) SetThresholds(th *Thresholds) {
	if th == e.th {
		return
	}
	e.th = th
	for v := range NumVectors {
		e.addrLim[v] = makeLimits(th.Addr[v], e.cfg.Step)
	}
	e.netLim = make(map[string]*[NumVectors]limits, len(th.Networks))
	for name, ls := range th.Networks {
		var x [NumVectors]limits
		for v := range NumVectors {
			x[v] = makeLimits(ls[v], e.cfg.Step)
		}
		e.netLim[name] = &x
	}
	// Network entries: one per listed network; a network no longer listed
	// keeps its entry while an attack on it lasts.
	if e.nets == nil {
		e.nets = map[string]*entry{}
	}
	for name := range e.netLim {
		if e.nets[name] == nil {
			e.nets[name] = e.newNetEntry(name)
		}
	}
}

func (e *Engine) newNetEntry(name string) *entry {
	stamps := make([]int64, e.r)
	for j := range stamps {
		stamps[j] = -1
	}
	return &entry{net: name, isNet: true, used: true, stamp: stamps, ring: make([]counters, e.r*int(NumVectors))}
}

// Take returns the counts since the last Take and zeroes them.
func (e *Engine) Take() Counts {
	c := e.counts
	e.counts = Counts{}
	return c
}

// Alerts returns the alerts decided since the last call; the slice is
// reused by the engine after the next Add or Tick.
func (e *Engine) Alerts() []Alert {
	out := e.out
	e.out = e.out[:0]
	return out
}

func key16(b []byte) ([16]byte, bool) {
	var k [16]byte
	switch len(b) {
	case 4:
		k[10], k[11] = 0xff, 0xff
		copy(k[12:], b)
	case 16:
		copy(k[:], b)
	default:
		return k, false
	}
	return k, true
}

func (e *Engine) stepOf(t int64) int64 { return t / e.stepNs }

// pstate is a partition's progress in event time.
type pstate struct {
	maxT int64     // newest time_received read from it; 0: none yet
	wall time.Time // when it last gave a flow, or was assigned
}

// Assign declares a partition before its first flow, so the watermark
// waits for it (up to Config.Idle) instead of leaving its flows late.
func (e *Engine) Assign(part int32, wall time.Time) {
	if e.parts[part] == nil {
		e.parts[part] = &pstate{wall: wall}
	}
}

func (e *Engine) part(p int32, wall time.Time) *pstate {
	if e.lastPS != nil && e.lastPart == p {
		return e.lastPS
	}
	ps := e.parts[p]
	if ps == nil {
		ps = &pstate{wall: wall}
		e.parts[p] = ps
	}
	e.lastPart, e.lastPS = p, ps
	return ps
}

// watermark is the event time every partition has reached: the least of
// the partitions' newest flows, leaving out partitions idle for
// Config.Idle (wall clock), and not more than Config.MaxSkew behind the
// newest flow. When every partition is idle, it is the newest flow plus
// the wall time since the last flow beyond Config.Idle.
func (e *Engine) watermark(wall time.Time) int64 {
	w, any := int64(math.MaxInt64), false
	for _, ps := range e.parts {
		if wall.Sub(ps.wall) >= e.cfg.Idle {
			continue
		}
		any = true
		w = min(w, ps.maxT)
	}
	if !any {
		return e.maxT + max(int64(wall.Sub(e.lastWall)-e.cfg.Idle), 0)
	}
	return max(w, e.maxT-int64(e.cfg.MaxSkew))
}

// Add counts one flow read from partition part. wall is the wall clock
// (for Config.MaxFuture and Config.Idle).
func (e *Engine) Add(m *pb.FlowMessage, part int32, wall time.Time) {
	if m.TimeReceivedNs == 0 {
		e.counts.Dropped[dropNoTime]++
		return
	}
	if m.TimeReceivedNs > math.MaxInt64 || (e.cfg.MaxFuture > 0 && int64(m.TimeReceivedNs) > wall.UnixNano()+int64(e.cfg.MaxFuture)) {
		e.counts.Dropped[dropFuture]++
		return
	}
	t := int64(m.TimeReceivedNs)
	dst, ok := key16(m.DstAddr)
	if !ok {
		e.counts.Dropped[dropBadAddress]++
		return
	}
	e.lastWall = wall
	ps := e.part(part, wall)
	ps.wall = wall
	if !e.started {
		// Room for the other partitions' first flows, up to the skew.
		e.started, e.maxT = true, t
		e.closed = max(e.stepOf(t-int64(e.cfg.Lateness)-int64(e.cfg.MaxSkew)), e.floor)
	}
	if t > ps.maxT {
		// The watermark can close a step only when a partition's newest
		// flow (less the lateness) moves into another step.
		lat := int64(e.cfg.Lateness)
		crossed := e.stepOf(t-lat) != e.stepOf(ps.maxT-lat)
		ps.maxT = t
		e.maxT = max(e.maxT, t)
		if crossed {
			e.advance(e.watermark(wall))
		}
	}
	k := e.stepOf(t)
	if k < e.closed {
		e.counts.Dropped[dropLate]++
		return
	}
	e.counts.Flows++
	sr := m.SamplingRate
	if sr == 0 {
		sr = 1
		e.counts.ZeroSamplingRate++
	}
	pk := satMul(m.Packets, sr)
	bi := satMul(satMul(m.Bytes, 8), sr)
	v := Classify(m)

	if i, ok := e.idx[dst]; ok {
		en := &e.ents[i]
		en.net = m.DstNetName
		e.count(en, &e.addrLim, k, v, bi, pk, m)
	} else if e.admit(k, dst, v, bi, pk) {
		i := e.take(dst, k)
		if i >= 0 {
			en := &e.ents[i]
			en.net = m.DstNetName
			e.count(en, &e.addrLim, k, v, bi, pk, m)
		}
	}
	if len(e.netLim) > 0 && m.DstNetName != "" {
		if lim := e.netLim[m.DstNetName]; lim != nil {
			e.count(e.nets[m.DstNetName], lim, k, v, bi, pk, m)
		}
	}
}

// count adds a flow to a tracked target, and to its top sources when the
// vector is hot (half a threshold within the step) or under attack.
func (e *Engine) count(en *entry, lim *[NumVectors]limits, k int64, v Vector, bi, pk uint64, m *pb.FlowMessage) {
	en.last = max(en.last, k)
	c := en.slot(k, e.r)
	c[VectorTotal].add(bi, pk, 1)
	e.sources(en, &lim[VectorTotal], VectorTotal, c[VectorTotal], k, pk, m)
	if v != VectorTotal {
		c[v].add(bi, pk, 1)
		e.sources(en, &lim[v], v, c[v], k, pk, m)
	}
}

func (e *Engine) sources(en *entry, l *limits, v Vector, c counters, k int64, pk uint64, m *pb.FlowMessage) {
	s := &en.vs[v]
	hot := l.set && l.hot(c)
	if s.tops == nil {
		if !hot && !s.active {
			return
		}
		if s.tops = e.newTops(); s.tops == nil {
			return
		}
	}
	t := s.tops
	if hot {
		t.hot = max(t.hot, k)
	}
	if a, ok := key16(m.SrcAddr); ok {
		t.addr.add(a, pk)
	}
	t.as.add(m.SrcAs, pk)
	t.country.add(m.SrcCountry, pk)
	x := exporterKey{name: m.ExporterName}
	if x.name == "" {
		if a, ok := key16(m.SamplerAddress); ok {
			x.addr, x.n = a, uint8(len(m.SamplerAddress))
		}
	}
	t.exp.add(x, pk)
}

func (e *Engine) newTops() *tops {
	if n := len(e.topsPool); n > 0 {
		t := e.topsPool[n-1]
		e.topsPool = e.topsPool[:n-1]
		t.reset()
		e.topsLive++
		return t
	}
	if e.topsLive >= e.topsMax {
		return nil
	}
	e.topsLive++
	return &tops{}
}

func (e *Engine) freeTops(s *vstate) {
	if s.tops != nil {
		e.topsPool = append(e.topsPool, s.tops)
		e.topsLive--
		s.tops = nil
	}
}

func hash64(k [16]byte) uint64 {
	// Two 64-bit halves mixed (splitmix64 finaliser): cheap and good
	// enough to spread addresses over the sketch's columns.
	a := uint64(k[0]) | uint64(k[1])<<8 | uint64(k[2])<<16 | uint64(k[3])<<24 | uint64(k[4])<<32 | uint64(k[5])<<40 | uint64(k[6])<<48 | uint64(k[7])<<56
	b := uint64(k[8]) | uint64(k[9])<<8 | uint64(k[10])<<16 | uint64(k[11])<<24 | uint64(k[12])<<32 | uint64(k[13])<<40 | uint64(k[14])<<48 | uint64(k[15])<<56
	x := a ^ bits.RotateLeft64(b, 31) ^ 0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// admit adds an untracked destination's flow to the sketch of its step and
// reports whether the destination's estimate reached admitScore.
func (e *Engine) admit(k int64, dst [16]byte, v Vector, bi, pk uint64) bool {
	score := e.score(VectorTotal, bi, pk)
	if v != VectorTotal {
		score = max(score, e.score(v, bi, pk))
	}
	if score >= admitScore {
		return true
	}
	s := &e.sk[int(k%int64(len(e.sk)))]
	if s.step != k {
		clear(s.c)
		s.step = k
	}
	h := hash64(dst)
	est := uint32(math.MaxUint32)
	for d := range sketchDepth {
		col := uint32(h>>(16*d)) & (sketchWidth - 1)
		c := &s.c[d*sketchWidth+int(col)]
		*c = uint32(min(uint64(*c)+uint64(score), math.MaxUint32))
		est = min(est, *c)
	}
	return est >= admitScore
}

// score is a flow's share of v's nearest threshold in 1/scoreUnit.
func (e *Engine) score(v Vector, bi, pk uint64) uint32 {
	l := &e.addrLim[v]
	s := max(float64(bi)*l.inv[0], float64(pk)*l.inv[1], l.inv[2])
	return uint32(min(s, scoreUnit*16))
}

// take returns a free entry for dst, evicting a light target when the
// table is full, or -1 when every sampled target is in an attack.
func (e *Engine) take(dst [16]byte, k int64) int32 {
	var i int32 = -1
	if n := len(e.free); n > 0 {
		i = e.free[n-1]
		e.free = e.free[:n-1]
	} else {
		// Sampled eviction: the lightest of a few random targets without
		// an attack state (a destination that still matters is back in
		// the sketch's view within a step).
		var best int32 = -1
		var bestLast int64
		for range evictSample {
			e.rng ^= e.rng << 13
			e.rng ^= e.rng >> 7
			e.rng ^= e.rng << 17
			j := int32(e.rng % uint64(len(e.ents)))
			en := &e.ents[j]
			if en.hasState() {
				continue
			}
			if best < 0 || en.last < bestLast {
				best, bestLast = j, en.last
			}
		}
		if best < 0 {
			e.counts.TargetsFull++
			return -1
		}
		e.counts.Evictions++
		e.release(best)
		i = e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
	}
	en := &e.ents[i]
	en.key, en.used, en.last = dst, true, k
	e.idx[dst] = i
	return i
}

// release frees entry i.
func (e *Engine) release(i int32) {
	en := &e.ents[i]
	delete(e.idx, en.key)
	for v := range en.vs {
		e.freeTops(&en.vs[v])
		en.vs[v] = vstate{}
	}
	for j := range en.stamp {
		en.stamp[j] = -1
	}
	en.used, en.net = false, ""
	e.free = append(e.free, i)
}

// Tick moves the watermark on by the wall clock: partitions idle for
// Config.Idle stop holding it back, and when no flow arrives at all it
// advances with the wall clock, so the last steps close when the traffic
// stops.
func (e *Engine) Tick(wall time.Time) {
	if !e.started {
		return
	}
	e.advance(e.watermark(wall))
}

// advance closes every step that ends at least Config.Lateness before the
// watermark t.
func (e *Engine) advance(t int64) {
	to := e.stepOf(t-int64(e.cfg.Lateness)) - 1 // the last step to close
	for e.closed <= to {
		if len(e.idx) == 0 && !e.netsBusy() {
			// Nothing tracked: the steps in between are empty.
			e.closed = to + 1
			return
		}
		e.closeStep(e.closed)
		e.closed++
	}
}

func (e *Engine) netsBusy() bool {
	for _, en := range e.nets {
		if en.last >= e.closed-int64(e.window) || en.hasState() {
			return true
		}
	}
	return false
}

// closeStep decides step k for every target.
func (e *Engine) closeStep(k int64) {
	for i := range e.ents {
		en := &e.ents[i]
		if !en.used {
			continue
		}
		e.decide(en, &e.addrLim, k)
		if en.last <= k-int64(e.window) && !en.hasState() {
			e.release(int32(i))
		}
	}
	for name, en := range e.nets {
		lim := e.netLim[name]
		if lim == nil {
			lim = &[NumVectors]limits{}
		}
		e.decide(en, lim, k)
		if lim == e.netLim[name] || en.hasState() {
			continue
		}
		delete(e.nets, name) // dropped from the file and its attack ended
	}
}

func (e *Engine) decide(en *entry, lim *[NumVectors]limits, k int64) {
	// The vectors first, then total: total does not start while another
	// vector of the target is in an attack (one attack, one alert).
	for v := NumVectors - 1; v < NumVectors; v-- { // Vector is unsigned: 0-1 ends the loop
		e.decideVector(en, &lim[v], Vector(v), k)
	}
}

func (e *Engine) decideVector(en *entry, l *limits, v Vector, k int64) {
	s := &en.vs[v]
	if !s.active && s.up == 0 && !l.set {
		e.maybeFreeTops(s, k)
		return
	}
	c := en.get(k, e.r, v)
	if !s.active {
		if !l.set || !l.exceeded(c) {
			s.up = 0
			e.maybeFreeTops(s, k)
			return
		}
		if s.up == 0 {
			s.first, s.sum, s.steps, s.peak = k, counters{}, 0, counters{}
		}
		s.up++
		s.sum.addC(c)
		s.steps++
		s.peak.maxC(c)
		if s.up < e.startSteps {
			return
		}
		if v == VectorTotal {
			for w := VectorTotal + 1; w < NumVectors; w++ {
				if en.vs[w].active {
					return // wait: another vector explains the traffic
				}
			}
		}
		s.active, s.down, s.lastUpdate = true, 0, k
		s.sumAbove, s.stepsAbove = s.sum, s.steps
		s.id = attackID(en, v, s.first, e.stepNs)
		a := e.alert(EventStart, en, v, s, k)
		a.Bps, a.Pps, a.Flows = e.mean(s.sum, s.steps)
		a.PeakBps, a.PeakPps, a.PeakFlows = 0, 0, 0
		e.out = append(e.out, a)
		return
	}
	s.sum.addC(c)
	s.steps++
	s.peak.maxC(c)
	if l.set && !l.below(c, e.cfg.Hysteresis) {
		s.down = 0
		s.sumAbove, s.stepsAbove = s.sum, s.steps
	} else {
		s.down++
	}
	if s.down >= e.endSteps {
		a := e.alert(EventEnd, en, v, s, k)
		a.Bps, a.Pps, a.Flows = e.mean(s.sumAbove, s.stepsAbove)
		a.DurationS = float64(s.stepsAbove*e.stepNs) / 1e9
		e.out = append(e.out, a)
		tops := s.tops
		*s = vstate{tops: tops}
		e.maybeFreeTops(s, k)
		return
	}
	if k-s.lastUpdate >= e.updateSteps {
		s.lastUpdate = k
		e.out = append(e.out, e.alert(EventUpdate, en, v, s, k))
	}
}

// maybeFreeTops frees the sources of a vector neither in an attack nor
// hot in a step after k.
func (e *Engine) maybeFreeTops(s *vstate, k int64) {
	if s.tops != nil && !s.active && s.up == 0 && s.tops.hot <= k {
		e.freeTops(s)
	}
}

// mean converts a sum over n steps to rates per second.
func (e *Engine) mean(c counters, n int64) (bps, pps, flows uint64) {
	if n <= 0 {
		return 0, 0, 0
	}
	d := float64(n*e.stepNs) / 1e9
	r := func(x uint64) uint64 { return uint64(math.Round(float64(x) / d)) }
	return r(c.bits), r(c.pkts), r(c.flows)
}

// alert builds an alert at the end of step k with the update figures:
// the mean over the last Config.Window (not before the attack's first
// step) and the peaks.
func (e *Engine) alert(event string, en *entry, v Vector, s *vstate, k int64) Alert {
	a := Alert{
		Event: event, ID: s.id, Target: en.target(), TargetNet: en.net, Vector: v.String(),
		At:    time.Unix(0, (k+1)*e.stepNs).UTC(),
		first: time.Unix(0, s.first*e.stepNs).UTC(),
	}
	a.Started = a.first.Format(time.RFC3339Nano)
	var sum counters
	from := max(k-int64(e.window)+1, s.first)
	for j := from; j <= k; j++ {
		sum.addC(en.get(j, e.r, v))
	}
	a.Bps, a.Pps, a.Flows = e.mean(sum, k-from+1)
	a.PeakBps, a.PeakPps, a.PeakFlows = e.mean(s.peak, 1)
	if s.tops != nil {
		s.tops.fill(&a)
	} else {
		a.TopSrcAddr, a.TopSrcAS, a.TopSrcCountry, a.Exporters = []string{}, []uint32{}, []string{}, []string{}
	}
	return a
}

func (en *entry) target() string {
	if en.isNet {
		return en.net
	}
	return netip.AddrFrom16(en.key).Unmap().String()
}

// attackID is the same for the same target, vector and first step, so a
// replay gives the same ids.
func attackID(en *entry, v Vector, first, stepNs int64) string {
	h := sha256.New()
	if en.isNet {
		h.Write([]byte("net:"))
	}
	h.Write([]byte(en.target()))
	h.Write([]byte{0})
	h.Write([]byte(v.String()))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, first*stepNs, 10))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Active returns the attacks in progress, with the figures of an update
// at the last closed step.
func (e *Engine) Active() []Alert {
	var out []Alert
	each := func(en *entry) {
		for v := range NumVectors {
			if s := &en.vs[v]; s.active {
				out = append(out, e.alert(EventUpdate, en, Vector(v), s, e.closed-1))
			}
		}
	}
	for i := range e.ents {
		if e.ents[i].used {
			each(&e.ents[i])
		}
	}
	for _, en := range e.nets {
		each(en)
	}
	return out
}

// ActiveCount counts the attacks in progress by vector.
func (e *Engine) ActiveCount() [NumVectors]int {
	var n [NumVectors]int
	for i := range e.ents {
		if e.ents[i].used {
			for v := range NumVectors {
				if e.ents[i].vs[v].active {
					n[v]++
				}
			}
		}
	}
	for _, en := range e.nets {
		for v := range NumVectors {
			if en.vs[v].active {
				n[v]++
			}
		}
	}
	return n
}
