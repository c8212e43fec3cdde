package detector

import (
	"net/netip"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// t0 is the event time the synthetic traffic starts at: a step boundary.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// wall is far enough after the flows for MaxFuture never to drop them.
var wall = t0.Add(24 * time.Hour)

// flow describes a synthetic flow; zero fields get defaults.
type flow struct {
	at       time.Duration // after t0
	dst, src string
	proto    uint32
	sport    uint32
	dport    uint32
	tcpFlags uint32
	ipFlags  uint32
	packets  uint64
	bytes    uint64
	rate     uint64 // sampling rate
	srcAS    uint32
	country  string
	net      string // dst_net_name
	exporter string
	sampler  string
	part     int32 // the Kafka partition it is read from
}

func (f flow) msg() *pb.FlowMessage {
	m := &pb.FlowMessage{
		Type: pb.FlowMessage_IPFIX, TimeReceivedNs: uint64(t0.Add(f.at).UnixNano()),
		SamplingRate: f.rate, Packets: f.packets, Bytes: f.bytes,
		SrcAddr: netip.MustParseAddr(f.src).AsSlice(), DstAddr: netip.MustParseAddr(f.dst).AsSlice(),
		Proto: f.proto, SrcPort: f.sport, DstPort: f.dport, TcpFlags: f.tcpFlags, IpFlags: f.ipFlags,
		SrcAs: f.srcAS, SrcCountry: f.country, DstNetName: f.net, ExporterName: f.exporter,
	}
	if f.sampler != "" {
		m.SamplerAddress = netip.MustParseAddr(f.sampler).AsSlice()
	}
	return m
}

// record frames flows as one Kafka record value.
func record(t testing.TB, fs ...flow) []byte {
	t.Helper()
	var b []byte
	for _, f := range fs {
		var err error
		if b, err = pb.AppendDelimited(b, f.msg()); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// feed decodes each flow from its wire form (pb.UnmarshalRecord, as Run
// does) into e, and returns the alerts decided.
func feed(t testing.TB, e *Engine, fs ...flow) []Alert {
	t.Helper()
	var m pb.FlowMessage
	var out []Alert
	for _, f := range fs {
		if err := pb.UnmarshalRecord(record(t, f), &m, func(m *pb.FlowMessage) error { e.Add(m, f.part, wall); return nil }); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Alerts()...)
	}
	return out
}

func testConfig() Config {
	c := DefaultConfig()
	return c
}

func newTestEngine(t testing.TB, c Config, th *Thresholds) *Engine {
	t.Helper()
	e, err := NewEngine(c, th)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// every repeats f n times per second from second from to second to
// (excluded), spread evenly within each second.
func every(f flow, from, to, n int) []flow {
	var out []flow
	for s := from; s < to; s++ {
		for i := range n {
			g := f
			g.at = time.Duration(s)*time.Second + time.Duration(i)*time.Second/time.Duration(n)
			out = append(out, g)
		}
	}
	return out
}

// merge interleaves flow lists by time (stable).
func merge(lists ...[]flow) []flow {
	var out []flow
	idx := make([]int, len(lists))
	for {
		best := -1
		for i, l := range lists {
			if idx[i] < len(l) && (best < 0 || l[idx[i]].at < lists[best][idx[best]].at) {
				best = i
			}
		}
		if best < 0 {
			return out
		}
		out = append(out, lists[best][idx[best]])
		idx[best]++
	}
}
