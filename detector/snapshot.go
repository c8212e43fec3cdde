package detector

import "maps"

// copyTo makes d (built by NewEngine with the same Config) a copy of e's
// state: the detector keeps the state as of its last committed Kafka
// transaction this way, and goes back to it when a transaction aborts, so
// the records read again are counted once and the alerts of the aborted
// transaction are decided again, not lost nor doubled.
func (e *Engine) copyTo(d *Engine) {
	d.SetThresholds(e.th)
	d.maxT, d.closed, d.started, d.lastWall, d.rng, d.floor = e.maxT, e.closed, e.started, e.lastWall, e.rng, e.floor
	clear(d.parts)
	for p, ps := range e.parts {
		c := *ps
		d.parts[p] = &c
	}
	d.lastPS = nil
	// The sketches are not copied (tens of MB each commit): after an
	// abort, destinations not tracked yet are seen afresh, which delays
	// their tracking by at most a step.
	for i := range d.sk {
		d.sk[i].step = -1
	}
	clear(d.idx)
	maps.Copy(d.idx, e.idx)
	d.free = append(d.free[:0], e.free...)
	for i := range e.ents {
		copyEntry(d, &d.ents[i], &e.ents[i])
	}
	for name := range d.nets {
		if e.nets[name] == nil {
			delete(d.nets, name)
		}
	}
	for name, en := range e.nets {
		dn := d.nets[name]
		if dn == nil {
			dn = &entry{stamp: make([]int64, len(en.stamp)), ring: make([]counters, len(en.ring))}
			d.nets[name] = dn
		}
		copyEntry(d, dn, en)
	}
	d.out = d.out[:0]
}

// copyEntry copies src into dst, the tops into dst's engine's own.
func copyEntry(d *Engine, dst, src *entry) {
	if !src.used && !dst.used {
		return
	}
	stamp, ring := dst.stamp, dst.ring
	old := dst.vs
	*dst = *src
	dst.stamp, dst.ring = stamp, ring
	copy(dst.stamp, src.stamp)
	copy(dst.ring, src.ring)
	for v := range dst.vs {
		t := old[v].tops
		if src.vs[v].tops == nil {
			if t != nil {
				d.topsPool = append(d.topsPool, t)
				d.topsLive--
			}
			dst.vs[v].tops = nil
			continue
		}
		if t == nil {
			t = &tops{}
			d.topsLive++
		}
		*t = *src.vs[v].tops
		dst.vs[v].tops = t
	}
}
