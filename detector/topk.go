package detector

import (
	"cmp"
	"net/netip"
	"slices"
)

// topN is how many sources an alert lists per kind; topSlots how many a
// summary keeps (space-saving: a newcomer takes the lightest slot and its
// weight, so a heavy key that comes late still climbs to the top).
const (
	topN     = 5
	topSlots = 8
)

type topK[K comparable] struct {
	keys [topSlots]K
	w    [topSlots]uint64
	n    int
}

func (t *topK[K]) add(k K, w uint64) {
	for i := range t.n {
		if t.keys[i] == k {
			t.w[i] = satAdd(t.w[i], w)
			return
		}
	}
	if t.n < topSlots {
		t.keys[t.n], t.w[t.n] = k, w
		t.n++
		return
	}
	lo := 0
	for i := 1; i < topSlots; i++ {
		if t.w[i] < t.w[lo] {
			lo = i
		}
	}
	t.keys[lo], t.w[lo] = k, satAdd(t.w[lo], w)
}

// top returns the heaviest keys, formatted, heaviest first (ties by the
// formatted key, so the order does not depend on arrival order).
func top[K comparable, V cmp.Ordered](t *topK[K], format func(K) (V, bool)) []V {
	type kv struct {
		v V
		w uint64
	}
	all := make([]kv, 0, t.n)
	for i := range t.n {
		if v, ok := format(t.keys[i]); ok {
			all = append(all, kv{v, t.w[i]})
		}
	}
	slices.SortFunc(all, func(a, b kv) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.v, b.v)
	})
	out := make([]V, 0, min(len(all), topN))
	for _, x := range all[:min(len(all), topN)] {
		out = append(out, x.v)
	}
	return out
}

type exporterKey struct {
	name string
	addr [16]byte
	n    uint8 // address length: 0 none, 4 or 16
}

// tops are the heaviest sources of one target and vector.
type tops struct {
	addr    topK[[16]byte]
	as      topK[uint32]
	country topK[string]
	exp     topK[exporterKey]
	hot     int64 // the latest step the vector was hot in (half a threshold)
}

func (t *tops) reset() { *t = tops{} }

func addrString(k [16]byte) (string, bool) {
	return netip.AddrFrom16(k).Unmap().String(), true
}

func (t *tops) fill(a *Alert) {
	a.TopSrcAddr = top(&t.addr, addrString)
	a.TopSrcAS = top(&t.as, func(as uint32) (uint32, bool) { return as, as != 0 })
	a.TopSrcCountry = top(&t.country, func(c string) (string, bool) { return c, c != "" })
	a.Exporters = top(&t.exp, func(e exporterKey) (string, bool) {
		switch {
		case e.name != "":
			return e.name, true
		case e.n == 4 || e.n == 16:
			return addrString(e.addr)
		}
		return "", false
	})
}
