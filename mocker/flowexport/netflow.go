package flowexport

import (
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Template IDs: one flow template per address family and the options
// template of the sampling-rate record, as a router's would be.
const (
	templateIPv4    = 256
	templateIPv6    = 257
	templateOptions = 258
)

// Information elements (the same numbers in NetFlow v9 and IPFIX, except
// the times and ICMPv6).
const (
	ieInBytes          = 1
	ieInPkts           = 2
	ieProtocol         = 4
	ieTOS              = 5
	ieTCPFlags         = 6
	ieSrcPort          = 7
	ieSrcIPv4          = 8
	ieSrcMask          = 9
	ieInputSNMP        = 10
	ieDstPort          = 11
	ieDstIPv4          = 12
	ieDstMask          = 13
	ieOutputSNMP       = 14
	ieNextHopIPv4      = 15
	ieSrcAS            = 16
	ieDstAS            = 17
	ieLastSwitched     = 21 // NetFlow v9: uptime in ms at the flow's last packet
	ieFirstSwitched    = 22
	ieSrcIPv6          = 27
	ieDstIPv6          = 28
	ieSrcMaskIPv6      = 29
	ieDstMaskIPv6      = 30
	ieFlowLabelIPv6    = 31
	ieICMPTypeCode     = 32 // type << 8 | code; NetFlow v9 uses it for ICMPv6 too
	ieSamplingInterval = 34
	ieSamplingAlgo     = 35
	ieMinTTL           = 52
	ieNextHopIPv6      = 62
	ieForwardingStatus = 89
	ieICMPTypeCodeIPv6 = 139 // IPFIX
	ieObsDomainID      = 149 // IPFIX: the options record's scope
	ieFlowStartMillis  = 152 // IPFIX: Unix ms
	ieFlowEndMillis    = 153
	scopeSystem        = 1 // NetFlow v9 option scope "System"
	samplingRandom     = 2 // samplingAlgorithm: random 1-in-N
)

// nfField is one template field and how a flow fills it: the template and
// the records are written from the same table, so they cannot disagree.
type nfField struct {
	id, size uint16
	put      func(b []byte, f *pb.FlowMessage, boot time.Time) []byte
}

// addr appends v, or zeros when it is not size bytes long.
func addr(b, v []byte, size int) []byte {
	if len(v) == size {
		return append(b, v...)
	}
	for range size {
		b = append(b, 0)
	}
	return b
}

func flowFields(version uint16, v6 bool) []nfField {
	size := uint16(4)
	src, dst, hop, smask, dmask := uint16(ieSrcIPv4), uint16(ieDstIPv4), uint16(ieNextHopIPv4), uint16(ieSrcMask), uint16(ieDstMask)
	if v6 {
		size = 16
		src, dst, hop, smask, dmask = ieSrcIPv6, ieDstIPv6, ieNextHopIPv6, ieSrcMaskIPv6, ieDstMaskIPv6
	}
	fs := []nfField{
		{src, size, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return addr(b, f.SrcAddr, int(size)) }},
		{dst, size, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return addr(b, f.DstAddr, int(size)) }},
		{hop, size, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return addr(b, f.NextHop, int(size)) }},
		{ieSrcPort, 2, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be16(b, uint16(f.SrcPort)) }},
		{ieDstPort, 2, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be16(b, uint16(f.DstPort)) }},
		{ieProtocol, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.Proto)) }},
		{ieTCPFlags, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.TcpFlags)) }},
		{ieTOS, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.IpTos)) }},
		{ieMinTTL, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.IpTtl)) }},
		{smask, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.SrcNet)) }},
		{dmask, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.DstNet)) }},
		{ieInputSNMP, 4, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be32(b, f.InIf) }},
		{ieOutputSNMP, 4, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be32(b, f.OutIf) }},
		{ieSrcAS, 4, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be32(b, f.SrcAs) }},
		{ieDstAS, 4, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be32(b, f.DstAs) }},
		{ieInBytes, 8, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be64(b, f.Bytes) }},
		{ieInPkts, 8, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return be64(b, f.Packets) }},
		{ieForwardingStatus, 1, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte { return append(b, byte(f.ForwardingStatus)) }},
	}
	icmp := uint16(ieICMPTypeCode)
	if v6 {
		if version == 10 {
			icmp = ieICMPTypeCodeIPv6
		}
		label := uint16(3) // NetFlow v9: 3 bytes; IPFIX flowLabelIPv6 is unsigned32
		if version == 10 {
			label = 4
		}
		fs = append(fs, nfField{ieFlowLabelIPv6, label, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte {
			if label == 3 {
				return append(b, byte(f.Ipv6FlowLabel>>16), byte(f.Ipv6FlowLabel>>8), byte(f.Ipv6FlowLabel))
			}
			return be32(b, f.Ipv6FlowLabel)
		}})
	}
	fs = append(fs, nfField{icmp, 2, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte {
		return be16(b, uint16(f.IcmpType<<8|f.IcmpCode&0xff))
	}})
	if version == 9 {
		fs = append(fs,
			nfField{ieFirstSwitched, 4, func(b []byte, f *pb.FlowMessage, boot time.Time) []byte {
				return be32(b, uptimeMillis(boot, time.Unix(0, int64(f.TimeFlowStartNs))))
			}},
			nfField{ieLastSwitched, 4, func(b []byte, f *pb.FlowMessage, boot time.Time) []byte {
				return be32(b, uptimeMillis(boot, time.Unix(0, int64(f.TimeFlowEndNs))))
			}})
	} else {
		fs = append(fs,
			nfField{ieFlowStartMillis, 8, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte {
				return be64(b, f.TimeFlowStartNs/uint64(time.Millisecond))
			}},
			nfField{ieFlowEndMillis, 8, func(b []byte, f *pb.FlowMessage, _ time.Time) []byte {
				return be64(b, f.TimeFlowEndNs/uint64(time.Millisecond))
			}})
	}
	return fs
}

func recordSize(fs []nfField) int {
	n := 0
	for _, f := range fs {
		n += int(f.size)
	}
	return n
}

// netflow encodes NetFlow v9 (version 9) or IPFIX (version 10).
type netflow struct {
	version    uint16
	e          Exporter
	fields     [2][]nfField // by family: 0 IPv4, 1 IPv6
	sizes      [2]int
	headerLen  int
	buf        []byte
	open       bool   // a datagram is being built
	setStart   int    // offset of the open set's header; -1: none
	setID      uint16 // id of the open set
	records    uint16 // NetFlow v9 count: records of every kind in the datagram
	dataRecs   uint32 // IPFIX: data records (flows and options) in the datagram
	flows      int
	seq        uint32 // NetFlow v9: datagrams sent; IPFIX: data records sent
	templated  bool   // templates sent at least once
	lastTempls time.Time
}

func newNetFlow(version uint16, e Exporter) *netflow {
	// NetFlow v9 numbers datagrams from 1; IPFIX counts the data records
	// sent before each message, so it starts at 0.
	n := &netflow{version: version, e: e, setStart: -1, headerLen: 20, seq: 1}
	if version == 10 {
		n.headerLen, n.seq = 16, 0
	}
	for fam := range 2 {
		n.fields[fam] = flowFields(version, fam == 1)
		n.sizes[fam] = recordSize(n.fields[fam])
	}
	n.buf = make([]byte, 0, e.MaxDatagram+64)
	return n
}

func (n *netflow) boot(now time.Time) time.Time {
	if n.e.Boot.IsZero() {
		n.e.Boot = now.Add(-time.Hour)
	}
	return n.e.Boot
}

func (n *netflow) Flows() int { return n.flows }

func (n *netflow) start(now time.Time) {
	n.boot(now)
	n.buf = n.buf[:0]
	for range n.headerLen {
		n.buf = append(n.buf, 0)
	}
	n.open, n.records, n.dataRecs, n.flows = true, 0, 0, 0
	if !n.templated || now.Sub(n.lastTempls) >= n.e.TemplateInterval {
		n.appendTemplates(now)
	}
}

func (n *netflow) openSet(id uint16) {
	n.closeSet()
	n.setStart, n.setID = len(n.buf), id
	n.buf = be32(n.buf, uint32(id)<<16)
}

func (n *netflow) closeSet() {
	if n.setStart < 0 {
		return
	}
	n.buf = pad4(n.buf, n.setStart)
	put16(n.buf[n.setStart+2:], uint16(len(n.buf)-n.setStart))
	n.setStart, n.setID = -1, 0
}

// appendTemplates writes the two flow templates, the options template and
// the option record with the sampling rate.
func (n *netflow) appendTemplates(now time.Time) {
	templateSet, optionsSet := uint16(0), uint16(1)
	if n.version == 10 {
		templateSet, optionsSet = 2, 3
	}
	n.openSet(templateSet)
	for fam, id := range []uint16{templateIPv4, templateIPv6} {
		n.buf = be16(be16(n.buf, id), uint16(len(n.fields[fam])))
		for _, f := range n.fields[fam] {
			n.buf = be16(be16(n.buf, f.id), f.size)
		}
		n.records++
	}
	n.openSet(optionsSet)
	if n.version == 9 {
		// Template id, scope and option lengths in bytes, then the fields.
		n.buf = be16(be16(be16(n.buf, templateOptions), 4), 8)
		n.buf = be16(be16(n.buf, scopeSystem), 4)
	} else {
		// Template id, field count, scope field count, then the fields.
		n.buf = be16(be16(be16(n.buf, templateOptions), 3), 1)
		n.buf = be16(be16(n.buf, ieObsDomainID), 4)
	}
	n.buf = be16(be16(n.buf, ieSamplingInterval), 4)
	n.buf = be16(be16(n.buf, ieSamplingAlgo), 1)
	n.records++
	n.openSet(templateOptions)
	n.buf = be32(n.buf, n.e.Domain)
	n.buf = be32(n.buf, n.e.SamplingRate)
	n.buf = append(n.buf, samplingRandom)
	n.records++
	n.dataRecs++
	n.closeSet()
	n.templated, n.lastTempls = true, now
}

func (n *netflow) Add(f *pb.FlowMessage, now time.Time) (Counted, bool) {
	if !n.open {
		n.start(now)
	}
	fam, id := 0, uint16(templateIPv4)
	if len(f.SrcAddr) == 16 {
		fam, id = 1, templateIPv6
	}
	need := n.sizes[fam] + 3 // the record and the set's padding
	if n.setID != id {
		need += 4 + 3 // a new set header, and the padding of the one it closes
	}
	if n.flows > 0 && len(n.buf)+need > n.e.MaxDatagram {
		return Counted{}, false
	}
	if n.setID != id {
		n.openSet(id)
	}
	boot := n.e.Boot
	for i := range n.fields[fam] {
		n.buf = n.fields[fam][i].put(n.buf, f, boot)
	}
	n.records++
	n.dataRecs++
	n.flows++
	return Counted{Bytes: f.Bytes, Packets: f.Packets}, true
}

func (n *netflow) Flush(dst []byte, now time.Time) []byte {
	if !n.open {
		return dst
	}
	n.closeSet()
	h := n.buf
	if n.version == 9 {
		put16(h[0:], 9)
		put16(h[2:], n.records)
		put32(h[4:], uptimeMillis(n.e.Boot, now))
		put32(h[8:], uint32(now.Unix()))
		put32(h[12:], n.seq)
		put32(h[16:], n.e.Domain)
		n.seq++
	} else {
		put16(h[0:], 10)
		put16(h[2:], uint16(len(h)))
		put32(h[4:], uint32(now.Unix()))
		put32(h[8:], n.seq)
		put32(h[12:], n.e.Domain)
		n.seq += n.dataRecs
	}
	n.open = false
	n.flows = 0
	return append(dst, h...)
}

func (n *netflow) Templates(dst []byte, now time.Time) []byte {
	dst = n.Flush(dst, now)
	n.templated = false // start writes them
	n.start(now)
	return n.Flush(dst, now)
}
