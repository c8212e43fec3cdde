// Package flowexport encodes flows the way routers export them over UDP:
// NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagrams with templates and
// option records carrying the sampling rate, and sFlow v5 datagrams of flow
// samples carrying the sampled packet's Ethernet, IP and TCP/UDP/ICMP
// headers, so a collector decodes addresses, ports and protocol itself.
//
// An Encoder is one exporter: it keeps that exporter's sequence numbers,
// uptime and template schedule. It knows nothing of sockets; the mocker
// sends what Flush returns. The tests decode every datagram with goflow2
// v2.2.6's own decoders and producer, field by field.
package flowexport

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Defaults of Exporter's zero fields.
const (
	// DefaultMaxDatagram keeps datagrams within a 1500-byte Ethernet MTU
	// with IPv4 or IPv6 and UDP headers, as routers do.
	DefaultMaxDatagram = 1400
	// DefaultTemplateInterval is how often NetFlow v9 and IPFIX templates,
	// and the sampling-rate option record, are sent again.
	DefaultTemplateInterval = 10 * time.Second
)

// Exporter describes one simulated router.
type Exporter struct {
	// Agent is the router's address as sFlow carries it in each datagram
	// (goflow2 stores it as sampler_address). NetFlow v9 and IPFIX carry no
	// address: collectors use the datagram's source address. IPv4 or IPv6.
	Agent netip.Addr
	// Domain is NetFlow v9's source ID, IPFIX's observation domain ID and
	// sFlow's sub-agent ID. goflow2 keys templates and sampling rates by
	// source address and this ID, so exporters sharing a source address
	// must have distinct ones.
	Domain uint32
	// SamplingRate is the 1-in-N packet sampling rate the exporter
	// announces: in the option record (NetFlow v9, IPFIX) or in every flow
	// sample (sFlow).
	SamplingRate uint32
	// Boot is when the router started: uptimes and NetFlow v9 flow times
	// count from it. The zero value means an hour before the first datagram.
	Boot time.Time
	// MaxDatagram bounds a datagram's size in bytes (UDP payload); 0 means
	// DefaultMaxDatagram. A flow alone always fits.
	MaxDatagram int
	// TemplateInterval is how often templates and option records are sent
	// again (NetFlow v9, IPFIX); 0 means DefaultTemplateInterval.
	TemplateInterval time.Duration
}

// Counted is what a collector stores for one encoded flow. NetFlow v9 and
// IPFIX carry the flow's bytes and packets; an sFlow flow sample is one
// sampled packet (packets 1, bytes its frame length).
type Counted struct {
	Bytes, Packets uint64
}

// Encoder builds one exporter's datagrams.
type Encoder interface {
	// Add appends f to the datagram being built and returns what the
	// collector will count for it. It returns false, adding nothing, when
	// f does not fit in a datagram that already holds flows: Flush, then
	// Add again. f needs 4- or 16-byte addresses (etype follows them).
	Add(f *pb.FlowMessage, now time.Time) (Counted, bool)
	// Flows is the number of flows in the datagram being built.
	Flows() int
	// Flush appends the datagram being built to dst, or nothing when it
	// holds no flow, and starts the next one; now stamps its header.
	Flush(dst []byte, now time.Time) []byte
	// Templates appends a datagram holding the templates and the
	// sampling-rate option record alone (NetFlow v9, IPFIX), as exporters
	// send when they start; sFlow has none and appends nothing.
	Templates(dst []byte, now time.Time) []byte
}

// ErrInvalidExporter is what New's errors wrap.
var ErrInvalidExporter = errors.New("invalid exporter")

// The protocols New encodes.
const (
	NetFlowV9 = "netflow9"
	IPFIX     = "ipfix"
	SFlow     = "sflow"
)

// Type is the FlowType goflow2 stamps on flows of a protocol.
func Type(protocol string) pb.FlowMessage_FlowType {
	switch protocol {
	case NetFlowV9:
		return pb.FlowMessage_NETFLOW_V9
	case IPFIX:
		return pb.FlowMessage_IPFIX
	case SFlow:
		return pb.FlowMessage_SFLOW_5
	}
	return pb.FlowMessage_FLOWUNKNOWN
}

// New returns an encoder of protocol (NetFlowV9, IPFIX or SFlow) for e.
func New(protocol string, e Exporter) (Encoder, error) {
	if e.MaxDatagram == 0 {
		e.MaxDatagram = DefaultMaxDatagram
	}
	if e.TemplateInterval == 0 {
		e.TemplateInterval = DefaultTemplateInterval
	}
	if e.MaxDatagram < 512 || e.MaxDatagram > 65507 {
		return nil, fmt.Errorf("%w: MaxDatagram %d: want 512 to 65507 bytes", ErrInvalidExporter, e.MaxDatagram)
	}
	switch protocol {
	case NetFlowV9:
		return newNetFlow(9, e), nil
	case IPFIX:
		return newNetFlow(10, e), nil
	case SFlow:
		if !e.Agent.IsValid() {
			return nil, fmt.Errorf("%w: sFlow needs an agent address", ErrInvalidExporter)
		}
		return newSFlow(e), nil
	}
	return nil, fmt.Errorf("%w: protocol %q: want %s, %s or %s", ErrInvalidExporter, protocol, NetFlowV9, IPFIX, SFlow)
}

// uptimeMillis is the router's uptime at t, in milliseconds as the 32-bit
// counters of NetFlow v9 and sFlow carry it (wrapping after 49.7 days).
func uptimeMillis(boot, t time.Time) uint32 {
	return uint32(max(t.Sub(boot), 0) / time.Millisecond)
}

func be16(b []byte, v uint16) []byte { return append(b, byte(v>>8), byte(v)) }
func be32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
func be64(b []byte, v uint64) []byte { return be32(be32(b, uint32(v>>32)), uint32(v)) }

func put16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// pad4 appends zeros up to a multiple of 4 bytes counted from start.
func pad4(b []byte, start int) []byte {
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
