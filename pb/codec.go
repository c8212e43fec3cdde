package pb

// A hand-written protobuf codec for FlowMessage.
//
// Why: the mocker encodes and the inserter decodes every flow, and
// protobuf-go's generic runtime walks field tables through reflection-built
// coders, which cost more than the rest of the per-flow work. FlowMessage is
// flat (scalars and bytes only), so straight-line code is short.
//
// Why it is safe: codec_test.go checks, field by field from the descriptor
// and with random full messages, that AppendWire is byte-identical to
// proto.Marshal and that DecodeWire reads back what proto.Unmarshal reads;
// FuzzDecode checks that both decoders accept and reject the same inputs.
// A field added to flow.proto without being added here fails those tests.

import (
	"fmt"
	"hash/maphash"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The two wire types FlowMessage's fields use.
const (
	varintType = uint64(protowire.VarintType)
	bytesType  = uint64(protowire.BytesType)
)

// wireTag is a field's tag before varint encoding.
func wireTag(num protowire.Number, typ uint64) uint64 { return uint64(num)<<3 | typ }

// sizeTag is the encoded size of a tag: fields 1-15 take one byte, 16-2047
// two (FlowMessage's highest number is 2020).
func sizeTag(num protowire.Number) int {
	if num < 16 {
		return 1
	}
	return 2
}

// boolUint is a bool's varint value (1 or 0, omitted when false).
func boolUint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// appendUint appends a varint field, omitted when zero (proto3). It is
// small enough to inline, so zero fields cost a compare.
func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return appendUintField(b, wireTag(num, varintType), v)
}

func appendUintField(b []byte, tag, v uint64) []byte {
	if tag < 0x80 {
		b = append(b, byte(tag))
	} else {
		b = append(b, byte(tag)|0x80, byte(tag>>7)) // numbers up to 2047
	}
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendBytes appends a bytes field, omitted when empty (proto3).
func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return append(appendUintField(b, wireTag(num, bytesType), uint64(len(v))), v...)
}

// appendString appends a string field, omitted when empty (proto3). Proto3
// strings must be valid UTF-8 (proto.Unmarshal rejects the whole message
// otherwise), so each run of invalid bytes is written as one U+FFFD, as
// strings.ToValidUTF8 does, rather than producing a message no reader
// accepts; valid strings are written as they are, without allocating.
func appendString(b []byte, num protowire.Number, v string) []byte {
	if len(v) == 0 {
		return b
	}
	return appendStringField(b, num, v)
}

func appendStringField(b []byte, num protowire.Number, v string) []byte {
	if !validString(v) {
		return appendInvalidString(b, num, v)
	}
	b = appendUintField(b, wireTag(num, bytesType), uint64(len(v)))
	return append(b, v...)
}

// validString is utf8.ValidString with a faster path for ASCII (most
// names): eight bytes at a time, without the call (BenchmarkAppendEnrichedFrame).
func validString(v string) bool {
	const high = 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := uint64(v[i]) | uint64(v[i+1])<<8 | uint64(v[i+2])<<16 | uint64(v[i+3])<<24 |
			uint64(v[i+4])<<32 | uint64(v[i+5])<<40 | uint64(v[i+6])<<48 | uint64(v[i+7])<<56
		if w&high != 0 {
			return utf8.ValidString(v[i:])
		}
	}
	for ; i < len(v); i++ {
		if v[i] >= utf8.RuneSelf {
			return utf8.ValidString(v[i:])
		}
	}
	return true
}

func appendInvalidString(b []byte, num protowire.Number, v string) []byte {
	b = appendUintField(b, wireTag(num, bytesType), uint64(validUTF8Len(v)))
	invalid := false // in a run of invalid bytes
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && n == 1 {
			if !invalid {
				b = utf8.AppendRune(b, utf8.RuneError)
			}
			invalid = true
		} else {
			b = append(b, v[i:i+n]...)
			invalid = false
		}
		i += n
	}
	return b
}

// validUTF8Len is len(strings.ToValidUTF8(v, "\uFFFD")), without allocating.
func validUTF8Len(v string) int {
	if validString(v) {
		return len(v)
	}
	size, invalid := 0, false
	for i := 0; i < len(v); {
		r, n := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && n == 1 {
			if !invalid {
				size += utf8.RuneLen(utf8.RuneError)
			}
			invalid = true
		} else {
			size += n
			invalid = false
		}
		i += n
	}
	return size
}

func sizeString(num protowire.Number, v string) int {
	if len(v) == 0 {
		return 0
	}
	return sizeStringField(num, v)
}

func sizeStringField(num protowire.Number, v string) int {
	n := validUTF8Len(v)
	return sizeTag(num) + protowire.SizeVarint(uint64(n)) + n
}

func sizeUint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return sizeTag(num) + protowire.SizeVarint(v)
}

func sizeBytes(num protowire.Number, v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return sizeTag(num) + protowire.SizeVarint(uint64(len(v))) + len(v)
}

// AppendWire appends the protobuf encoding of m to b, byte for byte what
// proto.Marshal produces: fields in field-number order, zero values and
// empty bytes omitted, unknown fields (kept by proto.Unmarshal) last. A
// string field with invalid UTF-8, which proto.Marshal refuses, is written
// with U+FFFD in place of each run of invalid bytes.
func (m *FlowMessage) AppendWire(b []byte) []byte {
	if m == nil {
		return b
	}
	// An enum is an int32, sign-extended to 64 bits on the wire.
	b = appendUint(b, 1, uint64(int64(m.Type)))
	b = appendUint(b, 3, m.SamplingRate)
	b = appendUint(b, 4, uint64(m.SequenceNum))
	b = appendBytes(b, 6, m.SrcAddr)
	b = appendBytes(b, 7, m.DstAddr)
	b = appendUint(b, 9, m.Bytes)
	b = appendUint(b, 10, m.Packets)
	b = appendBytes(b, 11, m.SamplerAddress)
	b = appendBytes(b, 12, m.NextHop)
	b = appendUint(b, 13, uint64(m.NextHopAs))
	b = appendUint(b, 14, uint64(m.SrcAs))
	b = appendUint(b, 15, uint64(m.DstAs))
	b = appendUint(b, 16, uint64(m.SrcNet))
	b = appendUint(b, 17, uint64(m.DstNet))
	b = appendUint(b, 18, uint64(m.InIf))
	b = appendUint(b, 19, uint64(m.OutIf))
	b = appendUint(b, 20, uint64(m.Proto))
	b = appendUint(b, 21, uint64(m.SrcPort))
	b = appendUint(b, 22, uint64(m.DstPort))
	b = appendUint(b, 23, uint64(m.IpTos))
	b = appendUint(b, 24, uint64(m.ForwardingStatus))
	b = appendUint(b, 25, uint64(m.IpTtl))
	b = appendUint(b, 26, uint64(m.TcpFlags))
	b = appendUint(b, 27, m.SrcMac)
	b = appendUint(b, 28, m.DstMac)
	b = appendUint(b, 29, uint64(m.VlanId))
	b = appendUint(b, 30, uint64(m.Etype))
	b = appendUint(b, 31, uint64(m.IcmpType))
	b = appendUint(b, 32, uint64(m.IcmpCode))
	b = appendUint(b, 33, uint64(m.SrcVlan))
	b = appendUint(b, 34, uint64(m.DstVlan))
	b = appendUint(b, 37, uint64(m.Ipv6FlowLabel))
	b = appendUint(b, 38, uint64(m.IpFlags))
	b = appendUint(b, 42, uint64(m.FlowDirection))
	b = appendUint(b, 70, uint64(m.ObservationDomainId))
	b = appendUint(b, 71, uint64(m.ObservationPointId))
	b = appendBytes(b, 100, m.BgpNextHop)
	b = appendUint(b, 110, m.TimeReceivedNs)
	b = appendUint(b, 111, m.TimeFlowStartNs)
	b = appendUint(b, 112, m.TimeFlowEndNs)
	b = appendString(b, 2001, m.SrcCountry)
	b = appendString(b, 2002, m.DstCountry)
	b = appendString(b, 2003, m.SrcAsName)
	b = appendString(b, 2004, m.DstAsName)
	b = appendString(b, 2005, m.SrcNetName)
	b = appendString(b, 2006, m.DstNetName)
	b = appendString(b, 2007, m.SrcNetRole)
	b = appendString(b, 2008, m.DstNetRole)
	b = appendString(b, 2009, m.SrcNetSite)
	b = appendString(b, 2010, m.DstNetSite)
	b = appendString(b, 2011, m.ExporterName)
	b = appendString(b, 2012, m.InIfName)
	b = appendString(b, 2013, m.OutIfName)
	b = appendString(b, 2014, m.InIfDescription)
	b = appendString(b, 2015, m.OutIfDescription)
	b = appendUint(b, 2016, m.InIfSpeed)
	b = appendUint(b, 2017, m.OutIfSpeed)
	b = appendUint(b, 2018, uint64(int64(m.InIfBoundary)))
	b = appendUint(b, 2019, uint64(int64(m.OutIfBoundary)))
	b = appendUint(b, 2020, boolUint(m.SamplingRateFromExporter))
	return append(b, m.unknownFields...)
}

// WireSize is len(m.AppendWire(nil)), without encoding.
func (m *FlowMessage) WireSize() int {
	if m == nil {
		return 0
	}
	return sizeUint(1, uint64(int64(m.Type))) +
		sizeUint(3, m.SamplingRate) +
		sizeUint(4, uint64(m.SequenceNum)) +
		sizeBytes(6, m.SrcAddr) +
		sizeBytes(7, m.DstAddr) +
		sizeUint(9, m.Bytes) +
		sizeUint(10, m.Packets) +
		sizeBytes(11, m.SamplerAddress) +
		sizeBytes(12, m.NextHop) +
		sizeUint(13, uint64(m.NextHopAs)) +
		sizeUint(14, uint64(m.SrcAs)) +
		sizeUint(15, uint64(m.DstAs)) +
		sizeUint(16, uint64(m.SrcNet)) +
		sizeUint(17, uint64(m.DstNet)) +
		sizeUint(18, uint64(m.InIf)) +
		sizeUint(19, uint64(m.OutIf)) +
		sizeUint(20, uint64(m.Proto)) +
		sizeUint(21, uint64(m.SrcPort)) +
		sizeUint(22, uint64(m.DstPort)) +
		sizeUint(23, uint64(m.IpTos)) +
		sizeUint(24, uint64(m.ForwardingStatus)) +
		sizeUint(25, uint64(m.IpTtl)) +
		sizeUint(26, uint64(m.TcpFlags)) +
		sizeUint(27, m.SrcMac) +
		sizeUint(28, m.DstMac) +
		sizeUint(29, uint64(m.VlanId)) +
		sizeUint(30, uint64(m.Etype)) +
		sizeUint(31, uint64(m.IcmpType)) +
		sizeUint(32, uint64(m.IcmpCode)) +
		sizeUint(33, uint64(m.SrcVlan)) +
		sizeUint(34, uint64(m.DstVlan)) +
		sizeUint(37, uint64(m.Ipv6FlowLabel)) +
		sizeUint(38, uint64(m.IpFlags)) +
		sizeUint(42, uint64(m.FlowDirection)) +
		sizeUint(70, uint64(m.ObservationDomainId)) +
		sizeUint(71, uint64(m.ObservationPointId)) +
		sizeBytes(100, m.BgpNextHop) +
		sizeUint(110, m.TimeReceivedNs) +
		sizeUint(111, m.TimeFlowStartNs) +
		sizeUint(112, m.TimeFlowEndNs) +
		sizeString(2001, m.SrcCountry) +
		sizeString(2002, m.DstCountry) +
		sizeString(2003, m.SrcAsName) +
		sizeString(2004, m.DstAsName) +
		sizeString(2005, m.SrcNetName) +
		sizeString(2006, m.DstNetName) +
		sizeString(2007, m.SrcNetRole) +
		sizeString(2008, m.DstNetRole) +
		sizeString(2009, m.SrcNetSite) +
		sizeString(2010, m.DstNetSite) +
		sizeString(2011, m.ExporterName) +
		sizeString(2012, m.InIfName) +
		sizeString(2013, m.OutIfName) +
		sizeString(2014, m.InIfDescription) +
		sizeString(2015, m.OutIfDescription) +
		sizeUint(2016, m.InIfSpeed) +
		sizeUint(2017, m.OutIfSpeed) +
		sizeUint(2018, uint64(int64(m.InIfBoundary))) +
		sizeUint(2019, uint64(int64(m.OutIfBoundary))) +
		sizeUint(2020, boolUint(m.SamplingRateFromExporter)) +
		len(m.unknownFields)
}

// DecodeWire resets m and decodes one protobuf-encoded FlowMessage from b.
// It accepts and rejects exactly what proto.Unmarshal does, with two
// differences callers may rely on:
//   - unknown fields (goflow2's as_path, layer_stack, mpls_*, ...) are
//     validated and skipped, not kept;
//   - bytes fields are copied into m's existing backing arrays, so m's byte
//     slices are only valid until the next DecodeWire (and never alias b);
//   - a string field equal to the one m held before keeps that string, so
//     decoding a stream of enriched flows into one message allocates only
//     for names that change.
//
// Errors wrap ErrBadMessage.
func (m *FlowMessage) DecodeWire(b []byte) error { return m.decodeWire(b, nil) }

// DecodeWireInterned is DecodeWire taking the string fields from in when
// it holds them, and adding them to it otherwise: a stream of flows whose
// names recur (the enricher's do, though rarely in consecutive flows)
// then costs a hash and a compare per name instead of a UTF-8 check and
// an allocation, and its strings share memory.
func (m *FlowMessage) DecodeWireInterned(b []byte, in *Interner) error { return m.decodeWire(b, in) }

// Interner holds recently decoded string fields for DecodeWireInterned,
// in a fixed table (about 8 KB): a name that collides with another
// replaces it. The zero value is ready; it is not safe for concurrent use.
type Interner struct {
	slots [internSlots]string
}

const internSlots = 512 // a power of two

var internSeed = maphash.MakeSeed()

// get returns v as a string, from the table or added to it; ok is false
// if v is not valid UTF-8. Only valid strings enter the table, so a hit
// needs no check.
func (in *Interner) get(v []byte) (s string, ok bool) {
	slot := &in.slots[maphash.Bytes(internSeed, v)&(internSlots-1)]
	if *slot == string(v) { // compared without a conversion
		return *slot, true
	}
	if !utf8.Valid(v) {
		return "", false
	}
	*slot = string(v)
	return *slot, true
}

func (m *FlowMessage) decodeWire(b []byte, in *Interner) error {
	// The strings, when the previous message had any, to keep those that
	// repeat (the enricher's names do).
	var prev [15]string // by field number - 2001
	if in == nil && (m.SrcCountry != "" || m.DstCountry != "" || m.SrcAsName != "" || m.DstAsName != "" ||
		m.SrcNetName != "" || m.DstNetName != "" || m.SrcNetRole != "" || m.DstNetRole != "" ||
		m.SrcNetSite != "" || m.DstNetSite != "" || m.ExporterName != "" || m.InIfName != "" ||
		m.OutIfName != "" || m.InIfDescription != "" || m.OutIfDescription != "") {
		prev = [...]string{
			m.SrcCountry, m.DstCountry, m.SrcAsName, m.DstAsName,
			m.SrcNetName, m.DstNetName, m.SrcNetRole, m.DstNetRole,
			m.SrcNetSite, m.DstNetSite, m.ExporterName, m.InIfName,
			m.OutIfName, m.InIfDescription, m.OutIfDescription,
		}
	}
	// Reset, keeping the bytes fields' capacity. Zeroing the whole struct
	// (as Reset does) keeps this correct if fields are added; a zero
	// literal compiles to a plain clear, where a literal with fields is
	// built aside and copied (twice the time for this 0.6 KB struct).
	sampler, src, dst, nextHop, bgpNextHop := m.SamplerAddress[:0], m.SrcAddr[:0], m.DstAddr[:0], m.NextHop[:0], m.BgpNextHop[:0]
	*m = FlowMessage{}
	m.SamplerAddress, m.SrcAddr, m.DstAddr, m.NextHop, m.BgpNextHop = sampler, src, dst, nextHop, bgpNextHop
	start := len(b)
	for len(b) > 0 {
		at := start - len(b)
		// The tag, with proto.Unmarshal's checks: a varint no longer than
		// 10 bytes, a field number within [1, 2^29-1].
		var t uint64
		if b[0] < 0x80 {
			t, b = uint64(b[0]), b[1:]
		} else if len(b) > 1 && b[1] < 0x80 { // fields 16-2047
			t, b = uint64(b[0]&0x7f)|uint64(b[1])<<7, b[2:]
		} else {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: tag at byte %d: %v", ErrBadMessage, at, protowire.ParseError(n))
			}
			t, b = v, b[n:]
		}
		num, typ := t>>3, protowire.Type(t&7)
		if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
			return fmt.Errorf("%w: invalid field number %d at byte %d", ErrBadMessage, num, at)
		}
		// A field number we know with an unexpected wire type is an unknown
		// field to proto.Unmarshal: it falls to the default cases below.
		switch typ {
		case protowire.VarintType:
			var v uint64
			var n int
			if len(b) > 0 && b[0] < 0x80 {
				v, n = uint64(b[0]), 1
			} else if v, n = consumeVarint(b); n < 0 {
				return fmt.Errorf("%w: field %d at byte %d: %v", ErrBadMessage, num, at, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				m.Type = FlowMessage_FlowType(int32(v))
			case 3:
				m.SamplingRate = v
			case 4:
				m.SequenceNum = uint32(v)
			case 9:
				m.Bytes = v
			case 10:
				m.Packets = v
			case 13:
				m.NextHopAs = uint32(v)
			case 14:
				m.SrcAs = uint32(v)
			case 15:
				m.DstAs = uint32(v)
			case 16:
				m.SrcNet = uint32(v)
			case 17:
				m.DstNet = uint32(v)
			case 18:
				m.InIf = uint32(v)
			case 19:
				m.OutIf = uint32(v)
			case 20:
				m.Proto = uint32(v)
			case 21:
				m.SrcPort = uint32(v)
			case 22:
				m.DstPort = uint32(v)
			case 23:
				m.IpTos = uint32(v)
			case 24:
				m.ForwardingStatus = uint32(v)
			case 25:
				m.IpTtl = uint32(v)
			case 26:
				m.TcpFlags = uint32(v)
			case 27:
				m.SrcMac = v
			case 28:
				m.DstMac = v
			case 29:
				m.VlanId = uint32(v)
			case 30:
				m.Etype = uint32(v)
			case 31:
				m.IcmpType = uint32(v)
			case 32:
				m.IcmpCode = uint32(v)
			case 33:
				m.SrcVlan = uint32(v)
			case 34:
				m.DstVlan = uint32(v)
			case 37:
				m.Ipv6FlowLabel = uint32(v)
			case 38:
				m.IpFlags = uint32(v)
			case 42:
				m.FlowDirection = uint32(v)
			case 70:
				m.ObservationDomainId = uint32(v)
			case 71:
				m.ObservationPointId = uint32(v)
			case 110:
				m.TimeReceivedNs = v
			case 111:
				m.TimeFlowStartNs = v
			case 112:
				m.TimeFlowEndNs = v
			case 2016:
				m.InIfSpeed = v
			case 2017:
				m.OutIfSpeed = v
			case 2018:
				m.InIfBoundary = FlowMessage_Boundary(int32(v))
			case 2019:
				m.OutIfBoundary = FlowMessage_Boundary(int32(v))
			case 2020:
				// As protobuf-go: any non-zero varint is true.
				m.SamplingRateFromExporter = v != 0
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d at byte %d: %v", ErrBadMessage, num, at, protowire.ParseError(n))
			}
			b = b[n:]
			// As in proto3, the last occurrence of a field wins.
			switch num {
			case 6:
				m.SrcAddr = setBytes(m.SrcAddr, v)
			case 7:
				m.DstAddr = setBytes(m.DstAddr, v)
			case 11:
				m.SamplerAddress = setBytes(m.SamplerAddress, v)
			case 12:
				m.NextHop = setBytes(m.NextHop, v)
			case 100:
				m.BgpNextHop = setBytes(m.BgpNextHop, v)
			}
			if num < 2001 || num > 2015 {
				break
			}
			// Proto3 strings: proto.Unmarshal rejects invalid UTF-8.
			var s string
			if in != nil && len(v) > 0 {
				var ok bool
				if s, ok = in.get(v); !ok {
					return fmt.Errorf("%w: field %d at byte %d: invalid UTF-8", ErrBadMessage, num, at)
				}
			} else {
				if !utf8.Valid(v) {
					return fmt.Errorf("%w: field %d at byte %d: invalid UTF-8", ErrBadMessage, num, at)
				}
				if s = prev[num-2001]; s != string(v) { // compared without a conversion
					s = string(v)
				}
			}
			switch num {
			case 2001:
				m.SrcCountry = s
			case 2002:
				m.DstCountry = s
			case 2003:
				m.SrcAsName = s
			case 2004:
				m.DstAsName = s
			case 2005:
				m.SrcNetName = s
			case 2006:
				m.DstNetName = s
			case 2007:
				m.SrcNetRole = s
			case 2008:
				m.DstNetRole = s
			case 2009:
				m.SrcNetSite = s
			case 2010:
				m.DstNetSite = s
			case 2011:
				m.ExporterName = s
			case 2012:
				m.InIfName = s
			case 2013:
				m.OutIfName = s
			case 2014:
				m.InIfDescription = s
			case 2015:
				m.OutIfDescription = s
			}
		default:
			// Fixed32, fixed64, groups (skipped whole, nested, up to the
			// matching end-group tag) and invalid types: the very function
			// proto.Unmarshal uses to skip unknown fields. A stray
			// end-group tag is an error, as in proto.Unmarshal.
			n := protowire.ConsumeFieldValue(protowire.Number(num), typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d at byte %d: %v", ErrBadMessage, num, at, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// consumeVarint is protowire.ConsumeVarint with a fast path for two-byte
// values (DecodeWire handles one-byte values inline).
func consumeVarint(b []byte) (uint64, int) {
	if len(b) > 1 && b[0] >= 0x80 && b[1] < 0x80 {
		return uint64(b[0]&0x7f) | uint64(b[1])<<7, 2
	}
	return protowire.ConsumeVarint(b)
}

// setBytes copies v into dst's backing array, growing it if needed; the
// first allocation has room for an IPv6 address.
func setBytes(dst, v []byte) []byte {
	if cap(dst) < len(v) {
		dst = make([]byte, 0, max(len(v), 16))
	}
	return append(dst[:0], v...)
}
