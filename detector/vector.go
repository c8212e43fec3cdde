package detector

import "github.com/spendletonliveaction/flow-pipeline/pb"

// Vector is an attack vector: the traffic to a target is measured in
// total and split by vector. Every flow counts in VectorTotal and in at
// most one other vector (the first that matches, in the order below), so
// one attack raises one vector's alert, not several.
type Vector uint8

// The vectors; their names (Vector.String) are the label values and the
// keys of the thresholds file.
const (
	VectorTotal     Vector = iota // all traffic to the target
	VectorFragment                // IP fragments: ip_flags has More Fragments
	VectorICMP                    // ICMP and ICMPv6
	VectorSYN                     // TCP with SYN and without ACK
	VectorDNS                     // UDP from port 53
	VectorNTP                     // UDP from port 123
	VectorSSDP                    // UDP from port 1900
	VectorMemcached               // UDP from port 11211
	VectorCLDAP                   // UDP from port 389
	VectorChargen                 // UDP from port 19
	VectorSNMP                    // UDP from port 161
	VectorUDP                     // other UDP
	NumVectors
)

var vectorNames = [NumVectors]string{
	"total", "fragment", "icmp-flood", "syn", "dns-amp", "ntp-amp", "ssdp-amp",
	"memcached-amp", "cldap-amp", "chargen-amp", "snmp-amp", "udp-flood",
}

func (v Vector) String() string {
	if v < NumVectors {
		return vectorNames[v]
	}
	return "unknown"
}

// VectorNames lists the vectors' names, total first.
func VectorNames() []string { return append([]string(nil), vectorNames[:]...) }

// ParseVector maps a name to its Vector.
func ParseVector(name string) (Vector, bool) {
	for i, n := range vectorNames {
		if n == name {
			return Vector(i), true
		}
	}
	return 0, false
}

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	tcpSYN = 0x02
	tcpACK = 0x10
	// ipFlagMF is More Fragments in goflow2's ip_flags: it stores the three
	// flag bits of the IPv4 header (or the IPv6 fragment header's M flag,
	// or IPFIX fragmentFlags shifted right by 5) with MF as the lowest bit.
	ipFlagMF = 0x1
)

// Classify returns the vector of m other than VectorTotal, or VectorTotal
// when none matches (TCP without a lone SYN, other protocols).
//
// Fragments: goflow2 also fills fragment_offset (field 36), which
// pb/flow.proto does not carry; every fragment but the last of a packet
// has More Fragments set, so a fragment flood shows through ip_flags.
func Classify(m *pb.FlowMessage) Vector {
	switch {
	case m.IpFlags&ipFlagMF != 0:
		return VectorFragment
	case m.Proto == protoICMP || m.Proto == protoICMPv6:
		return VectorICMP
	case m.Proto == protoTCP:
		if m.TcpFlags&(tcpSYN|tcpACK) == tcpSYN {
			return VectorSYN
		}
		return VectorTotal
	case m.Proto == protoUDP:
		switch m.SrcPort {
		case 53:
			return VectorDNS
		case 123:
			return VectorNTP
		case 1900:
			return VectorSSDP
		case 11211:
			return VectorMemcached
		case 389:
			return VectorCLDAP
		case 19:
			return VectorChargen
		case 161:
			return VectorSNMP
		}
		return VectorUDP
	}
	return VectorTotal
}
