package flowexport

import (
	"encoding/binary"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// sFlow v5 structures (sflow.org/sflow_version_5.txt).
const (
	sflowFlowSample  = 1    // enterprise 0, format 1
	sflowRawHeader   = 1    // flow record: sampled packet header
	sflowExtRouter   = 1002 // flow record: next hop and masks
	sflowExtGateway  = 1003 // flow record: BGP next hop and AS numbers
	sflowEthernet    = 1    // header protocol: Ethernet (ISO 8802-3)
	sflowMaxHeader   = 128  // bytes of the packet an agent copies, the usual default
	sflowFCS         = 4    // Ethernet FCS: counted in the frame length, stripped from the header
	sflowASSequence  = 2    // AS path segment type
	sflowLocalPref   = 100
	ethernetHeader   = 14
	ipv4Header       = 20
	ipv6Header       = 40
	tcpHeader        = 20
	udpHeader        = 8
	icmpHeader       = 8
	protoICMP        = 1
	protoTCP         = 6
	protoUDP         = 17
	protoICMPv6      = 58
	ipv4DontFragment = 0x4000
)

// sflow encodes sFlow v5: one flow sample per flow, standing for one
// sampled packet of the flow's average size.
type sflow struct {
	e          Exporter
	agent      []byte
	headerLen  int
	buf        []byte
	open       bool
	samples    uint32
	seq        uint32            // datagrams sent
	sampleSeq  map[uint32]uint32 // flow samples sent, by data source (input interface)
	headerData []byte            // scratch: the sampled packet header
}

func newSFlow(e Exporter) *sflow {
	s := &sflow{e: e, agent: e.Agent.Unmap().AsSlice(), sampleSeq: map[uint32]uint32{}, seq: 1}
	s.headerLen = 28 - 4 + len(s.agent)
	s.buf = make([]byte, 0, e.MaxDatagram+512)
	s.headerData = make([]byte, 0, sflowMaxHeader)
	return s
}

func (s *sflow) Flows() int { return int(s.samples) }

func (s *sflow) Templates(dst []byte, _ time.Time) []byte { return dst }

func (s *sflow) start(now time.Time) {
	if s.e.Boot.IsZero() {
		s.e.Boot = now.Add(-time.Hour)
	}
	s.buf = s.buf[:0]
	for range s.headerLen {
		s.buf = append(s.buf, 0)
	}
	s.open, s.samples = true, 0
}

// appendIP appends an sFlow address: its type (1 IPv4, 2 IPv6) and bytes.
func appendIP(b, ip []byte) []byte {
	switch len(ip) {
	case 16:
		return append(be32(b, 2), ip...)
	case 4:
		return append(be32(b, 1), ip...)
	}
	return be32(b, 0) // unknown: no address follows
}

// packetHeader builds the first bytes of a packet of the flow: Ethernet,
// IPv4 or IPv6, then TCP, UDP or ICMP, zeros for the payload. It returns
// the frame length (with the FCS) the sample announces.
func (s *sflow) packetHeader(f *pb.FlowMessage) uint32 {
	v6 := len(f.SrcAddr) == 16
	ipHdr := ipv4Header
	if v6 {
		ipHdr = ipv6Header
	}
	l4 := 0
	switch f.Proto {
	case protoTCP:
		l4 = tcpHeader
	case protoUDP:
		l4 = udpHeader
	case protoICMP, protoICMPv6:
		l4 = icmpHeader
	}
	avg := f.Bytes
	if f.Packets > 1 {
		avg = f.Bytes / f.Packets
	}
	ipLen := max(int(min(avg, 65535)), ipHdr+l4)
	frame := ethernetHeader + ipLen + sflowFCS

	h := s.headerData[:0]
	// Ethernet: locally administered MACs of the router's interfaces.
	h = append(h, 0x02, 0x00, byte(s.e.Domain>>8), byte(s.e.Domain), byte(f.OutIf>>8), byte(f.OutIf))
	h = append(h, 0x02, 0x01, byte(s.e.Domain>>8), byte(s.e.Domain), byte(f.InIf>>8), byte(f.InIf))
	if v6 {
		h = be16(h, 0x86dd)
		h = be32(h, 6<<28|f.IpTos&0xff<<20|f.Ipv6FlowLabel&0xfffff)
		h = be16(h, uint16(ipLen-ipv6Header))
		h = append(h, byte(f.Proto), byte(f.IpTtl))
		h = append(h, f.SrcAddr...)
		h = append(h, f.DstAddr...)
	} else {
		h = be16(h, 0x0800)
		ip := len(h)
		h = append(h, 0x45, byte(f.IpTos))
		h = be16(h, uint16(ipLen))
		h = be16(h, uint16(f.SequenceNum)) // identification
		h = be16(h, ipv4DontFragment)
		h = append(h, byte(f.IpTtl), byte(f.Proto), 0, 0)
		h = append(h, f.SrcAddr...)
		h = append(h, f.DstAddr...)
		put16(h[ip+10:], ipChecksum(h[ip:]))
	}
	switch f.Proto {
	case protoTCP:
		h = be16(be16(h, uint16(f.SrcPort)), uint16(f.DstPort))
		h = be32(be32(h, 0), 0) // sequence and acknowledgment numbers
		h = append(h, tcpHeader/4<<4, byte(f.TcpFlags))
		h = be16(be16(be16(h, 65535), 0), 0) // window, checksum, urgent pointer
	case protoUDP:
		h = be16(be16(h, uint16(f.SrcPort)), uint16(f.DstPort))
		h = be16(be16(h, uint16(ipLen-ipHdr)), 0)
	case protoICMP, protoICMPv6:
		h = append(h, byte(f.IcmpType), byte(f.IcmpCode))
		h = be16(be32(h, 0), 0) // checksum, identifier, sequence number
	}
	for len(h) < min(frame-sflowFCS, sflowMaxHeader) {
		h = append(h, 0)
	}
	s.headerData = h
	return uint32(frame)
}

// ipChecksum is the IPv4 header checksum (RFC 791).
func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func (s *sflow) Add(f *pb.FlowMessage, now time.Time) (Counted, bool) {
	if !s.open {
		s.start(now)
	}
	mark := len(s.buf)
	frame := s.packetHeader(f)
	src := f.InIf & 0xffffff // data source: the input interface (type 0)
	seq := s.sampleSeq[src] + 1

	b := be32(s.buf, sflowFlowSample)
	sampleLen := len(b)
	b = be32(b, 0) // length, set below
	b = be32(b, seq)
	b = be32(b, src)
	b = be32(b, s.e.SamplingRate)
	b = be32(b, seq*s.e.SamplingRate) // sample pool: packets the source saw
	b = be32(b, 0)                    // drops
	b = be32(b, f.InIf)
	b = be32(b, f.OutIf)
	b = be32(b, 3) // records

	b = be32(b, sflowRawHeader)
	rec := len(b)
	b = be32(b, 0)
	b = be32(b, sflowEthernet)
	b = be32(b, frame)
	b = be32(b, sflowFCS)
	b = be32(b, uint32(len(s.headerData)))
	b = append(b, s.headerData...)
	b = pad4(b, rec+4)
	put32(b[rec:], uint32(len(b)-rec-4))

	b = be32(b, sflowExtRouter)
	rec = len(b)
	b = be32(b, 0)
	b = appendIP(b, f.NextHop)
	b = be32(be32(b, f.SrcNet), f.DstNet)
	put32(b[rec:], uint32(len(b)-rec-4))

	b = be32(b, sflowExtGateway)
	rec = len(b)
	b = be32(b, 0)
	b = appendIP(b, f.NextHop)
	b = be32(b, 0)                // the router's own AS: the local side's, 0 as the flows carry it
	b = be32(be32(b, f.SrcAs), 0) // source AS, source peer AS
	if f.DstAs != 0 {             // AS path: one segment with the destination AS
		b = be32(be32(be32(be32(b, 1), sflowASSequence), 1), f.DstAs)
	} else {
		b = be32(b, 0)
	}
	b = be32(be32(b, 0), sflowLocalPref) // no communities, local preference
	put32(b[rec:], uint32(len(b)-rec-4))

	put32(b[sampleLen:], uint32(len(b)-sampleLen-4))
	if s.samples > 0 && len(b) > s.e.MaxDatagram {
		s.buf = b[:mark]
		return Counted{}, false
	}
	s.buf = b
	s.sampleSeq[src] = seq
	s.samples++
	return Counted{Bytes: uint64(frame), Packets: 1}, true
}

func (s *sflow) Flush(dst []byte, now time.Time) []byte {
	if !s.open {
		return dst
	}
	h := be32(s.buf[:0], 5)
	h = appendIP(h, s.agent)
	h = be32(h, s.e.Domain) // sub-agent
	h = be32(h, s.seq)
	h = be32(h, uptimeMillis(s.e.Boot, now))
	be32(h, s.samples)
	s.seq++
	s.open = false
	s.samples = 0
	return append(dst, s.buf...)
}
