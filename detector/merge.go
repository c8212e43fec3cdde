package detector

import (
	"slices"

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

// merger hands out a poll's records in event-time order across
// partitions (each partition's own order kept): a poll holds a run of
// records of each partition, one after the other, and a consumer catching
// up may get tens of seconds of each; fed as they come, the first
// partition's run would make the others' flows late.
type merger struct {
	parts []mergePart
}

type mergePart struct {
	part int32
	recs []*kgo.Record
	i    int
	key  uint64
}

func (m *merger) reset(f kgo.Fetches) {
	m.parts = m.parts[:0]
	f.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		for i := range m.parts {
			if m.parts[i].part == p.Partition {
				// Clipped: never write into the client's slice.
				m.parts[i].recs = append(slices.Clip(m.parts[i].recs), p.Records...)
				return
			}
		}
		m.parts = append(m.parts, mergePart{part: p.Partition, recs: p.Records})
	})
	for i := range m.parts {
		m.parts[i].key = firstTime(m.parts[i].recs[0].Value)
	}
}

// next returns the record with the earliest first flow, nil when done.
// A record that does not decode (key 0) goes first: it is only counted.
func (m *merger) next() *kgo.Record {
	best := -1
	for i := range m.parts {
		p := &m.parts[i]
		if p.i < len(p.recs) && (best < 0 || p.key < m.parts[best].key) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	p := &m.parts[best]
	r := p.recs[p.i]
	p.i++
	if p.i < len(p.recs) {
		p.key = firstTime(p.recs[p.i].Value)
	} else {
		p.recs = nil
	}
	return r
}
