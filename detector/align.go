package detector

import (
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
)

// firstTime returns the time_received of the first flow of a record value,
// or 0 when the record does not frame or has none.
func firstTime(value []byte) uint64 {
	size, n := protowire.ConsumeVarint(value)
	if n < 0 || size > uint64(len(value)-n) {
		return 0
	}
	b := value[n : n+int(size)]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 110 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0
			}
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}

// aligner feeds the engine the records of every partition in event-time
// order and keeps the partitions aligned (watermark alignment): a record
// whose first flow is more than bound past the base, the least position of
// the partitions that hold the watermark, is held back, and its partition
// paused (Kafka stops fetching it) until the others catch up. Without it
// a consumer catching up reads each partition a fetch (256 KiB) at a time,
// the partitions drift apart by more than Config.MaxSkew, and the slow
// ones' flows arrive after their steps closed: dropped as late.
//
// A held record's offset commits with the transaction that polled it, so
// the held records are part of the state: the detector copies them at
// each commit and goes back to the copy on abort, and counts them before
// the last commit on shutdown.
type aligner struct {
	bound uint64 // ns
	qs    []*alignQueue
}

// alignQueue is one partition's records polled and not yet counted.
type alignQueue struct {
	part   int32
	recs   []*kgo.Record // recs[i:] are held
	i      int
	key    uint64 // time_received of the first flow of recs[i]; 0: does not decode
	paused bool   // as the Kafka client has it (not part of the committed state)
	saved  []*kgo.Record
}

func newAligner(bound time.Duration) *aligner { return &aligner{bound: uint64(bound)} }

func (q *alignQueue) held() int { return len(q.recs) - q.i }

func (a *aligner) queue(part int32) *alignQueue {
	for _, q := range a.qs {
		if q.part == part {
			return q
		}
	}
	q := &alignQueue{part: part}
	a.qs = append(a.qs, q)
	slices.SortFunc(a.qs, func(x, y *alignQueue) int { return int(x.part) - int(y.part) })
	return q
}

// add queues a poll's records after those held for their partitions.
func (a *aligner) add(f kgo.Fetches) {
	f.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		q := a.queue(p.Partition)
		if q.i > 0 {
			// Drop the counted prefix; the copy at the last commit has its own slice.
			n := copy(q.recs, q.recs[q.i:])
			clear(q.recs[n:])
			q.recs, q.i = q.recs[:n], 0
		}
		q.recs = append(q.recs, p.Records...)
		q.key = firstTime(q.recs[0].Value)
	})
}

// base is the least position of the partitions that hold the watermark:
// a partition's first held record, else the newest flow counted from it
// when it gave one (or was assigned) within Config.Idle. MaxUint64 when
// there is none.
func (a *aligner) base(e *Engine, wall time.Time) uint64 {
	b := uint64(math.MaxUint64)
	for _, q := range a.qs {
		if q.held() > 0 {
			b = min(b, q.key)
		}
	}
	for p, ps := range e.parts {
		if q := a.find(p); q != nil && q.held() > 0 {
			continue
		}
		if wall.Sub(ps.wall) < e.cfg.Idle {
			b = min(b, uint64(ps.maxT))
		}
	}
	return b
}

func (a *aligner) find(part int32) *alignQueue {
	for _, q := range a.qs {
		if q.part == part {
			return q
		}
	}
	return nil
}

// feed hands fn the held records in event-time order (each partition's
// own order kept) while the earliest is within bound of the base; with
// all, every held record.
func (a *aligner) feed(e *Engine, wall time.Time, all bool, fn func(*kgo.Record)) {
	var limit uint64
	fresh := false
	for {
		var q *alignQueue
		for _, c := range a.qs {
			if c.held() > 0 && (q == nil || c.key < q.key) {
				q = c
			}
		}
		if q == nil {
			return
		}
		if !all && q.key > limit {
			if fresh {
				return // every held record is ahead: wait for the base
			}
			// The base only rises as records are counted: recompute it
			// when the cached limit is passed.
			b := a.base(e, wall)
			limit, fresh = b+min(a.bound, math.MaxUint64-b), true
			continue
		}
		r := q.recs[q.i]
		q.i++
		if q.i < len(q.recs) {
			q.key = firstTime(q.recs[q.i].Value)
		} else {
			q.recs, q.i = q.recs[:0], 0
		}
		fresh = false
		fn(r)
	}
}

// reconcile pauses the partitions that hold records and resumes the others.
func (a *aligner) reconcile(pause, resume func(parts []int32)) (paused int) {
	var p, r []int32
	for _, q := range a.qs {
		switch want := q.held() > 0; {
		case want && !q.paused:
			p = append(p, q.part)
		case !want && q.paused:
			r = append(r, q.part)
		}
		q.paused = q.held() > 0
		if q.paused {
			paused++
		}
	}
	if len(p) > 0 {
		pause(p)
	}
	if len(r) > 0 {
		resume(r)
	}
	return paused
}

// save keeps the held records as of a commit; restore goes back to them.
func (a *aligner) save() {
	for _, q := range a.qs {
		q.saved = append(q.saved[:0], q.recs[q.i:]...)
	}
}

func (a *aligner) restore() {
	for _, q := range a.qs {
		q.recs = append(q.recs[:0], q.saved...)
		q.i = 0
		if len(q.recs) > 0 {
			q.key = firstTime(q.recs[0].Value)
		}
	}
}

// heldRecords is the number of records held.
func (a *aligner) heldRecords() (n int) {
	for _, q := range a.qs {
		n += q.held()
	}
	return n
}
