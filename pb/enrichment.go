package pb

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Enrichment is what the enricher adds to one flow: the FlowMessage fields
// 2001-2020, and overrides of three collector fields. A zero field adds
// nothing.
//
// The enricher does not decode and re-encode a flow: AppendEnrichedFrame
// copies the collector's bytes as they are (goflow2 fields we do not
// declare, and a mapping file's custom fields, pass through) and appends
// these fields after them. Protobuf readers (protobuf-go, DecodeWire,
// ClickHouse) keep the last occurrence of a non-repeated varint field, so
// an override appended later replaces the collector's value. ClickHouse
// reads a string field that occurs twice as empty, though (compose/clickhouse
// TestFieldTwice): never enrich a frame that already holds these fields.
type Enrichment struct {
	SrcCountry, DstCountry            string // ISO 3166-1 alpha-2
	SrcAsName, DstAsName              string
	SrcNetName, DstNetName            string
	SrcNetRole, DstNetRole            string
	SrcNetSite, DstNetSite            string
	ExporterName                      string
	InIfName, OutIfName               string
	InIfDescription, OutIfDescription string
	InIfSpeed, OutIfSpeed             uint64 // bits per second
	InIfBoundary, OutIfBoundary       FlowMessage_Boundary
	SamplingRateFromExporter          bool   // sampling_rate came from the exporters file
	SamplingRate                      uint64 // 0 keeps the collector's sampling_rate
	SrcAs, DstAs                      uint32 // 0 keeps the collector's src_as, dst_as
}

// Reset zeroes e for the next flow.
func (e *Enrichment) Reset() { *e = Enrichment{} }

// AppendWire appends e's non-zero fields to dst as protobuf fields, in
// field-number order: the overrides sampling_rate (3), src_as (14) and
// dst_as (15), then 2001-2020. A string with invalid UTF-8 is written with
// one U+FFFD per run of invalid bytes (as strings.ToValidUTF8 does), since
// readers reject a proto3 string that is not UTF-8.
func (e *Enrichment) AppendWire(dst []byte) []byte {
	if e == nil {
		return dst
	}
	dst = appendUint(dst, 3, e.SamplingRate)
	dst = appendUint(dst, 14, uint64(e.SrcAs))
	dst = appendUint(dst, 15, uint64(e.DstAs))
	dst = appendString(dst, 2001, e.SrcCountry)
	dst = appendString(dst, 2002, e.DstCountry)
	dst = appendString(dst, 2003, e.SrcAsName)
	dst = appendString(dst, 2004, e.DstAsName)
	dst = appendString(dst, 2005, e.SrcNetName)
	dst = appendString(dst, 2006, e.DstNetName)
	dst = appendString(dst, 2007, e.SrcNetRole)
	dst = appendString(dst, 2008, e.DstNetRole)
	dst = appendString(dst, 2009, e.SrcNetSite)
	dst = appendString(dst, 2010, e.DstNetSite)
	dst = appendString(dst, 2011, e.ExporterName)
	dst = appendString(dst, 2012, e.InIfName)
	dst = appendString(dst, 2013, e.OutIfName)
	dst = appendString(dst, 2014, e.InIfDescription)
	dst = appendString(dst, 2015, e.OutIfDescription)
	dst = appendUint(dst, 2016, e.InIfSpeed)
	dst = appendUint(dst, 2017, e.OutIfSpeed)
	dst = appendUint(dst, 2018, uint64(int64(e.InIfBoundary)))
	dst = appendUint(dst, 2019, uint64(int64(e.OutIfBoundary)))
	dst = appendUint(dst, 2020, boolUint(e.SamplingRateFromExporter))
	return dst
}

// WireSize is len(e.AppendWire(nil)), without encoding.
func (e *Enrichment) WireSize() int {
	if e == nil {
		return 0
	}
	return sizeUint(3, e.SamplingRate) +
		sizeUint(14, uint64(e.SrcAs)) +
		sizeUint(15, uint64(e.DstAs)) +
		sizeString(2001, e.SrcCountry) +
		sizeString(2002, e.DstCountry) +
		sizeString(2003, e.SrcAsName) +
		sizeString(2004, e.DstAsName) +
		sizeString(2005, e.SrcNetName) +
		sizeString(2006, e.DstNetName) +
		sizeString(2007, e.SrcNetRole) +
		sizeString(2008, e.DstNetRole) +
		sizeString(2009, e.SrcNetSite) +
		sizeString(2010, e.DstNetSite) +
		sizeString(2011, e.ExporterName) +
		sizeString(2012, e.InIfName) +
		sizeString(2013, e.OutIfName) +
		sizeString(2014, e.InIfDescription) +
		sizeString(2015, e.OutIfDescription) +
		sizeUint(2016, e.InIfSpeed) +
		sizeUint(2017, e.OutIfSpeed) +
		sizeUint(2018, uint64(int64(e.InIfBoundary))) +
		sizeUint(2019, uint64(int64(e.OutIfBoundary))) +
		sizeUint(2020, boolUint(e.SamplingRateFromExporter))
}

// AppendEnrichedFrame appends to dst one length-prefixed frame (the framing
// of AppendDelimited and ForEachFrame): frame, one FlowMessage's bytes as
// ForEachFrame yields them, copied untouched, followed by e.AppendWire. With
// a nil or zero e it re-frames frame unchanged. dst must not overlap frame.
//
// The result may exceed MaxMessageSize, which readers reject, if frame is
// close to it or e's strings are long; callers bound what they add.
func AppendEnrichedFrame(dst, frame []byte, e *Enrichment) []byte {
	// One pass over e: a two-byte length placeholder (bodies of 128 to
	// 16383 bytes, most enriched flows), filled in after; another size
	// moves the body (BenchmarkAppendEnrichedFrame).
	const reserved = 2
	start := len(dst)
	dst = append(dst, 0, 0)
	dst = append(dst, frame...)
	dst = e.AppendWire(dst)
	size := len(dst) - start - reserved
	n := protowire.SizeVarint(uint64(size))
	switch {
	case n < reserved:
		copy(dst[start+n:], dst[start+reserved:])
		dst = dst[:len(dst)-(reserved-n)]
	case n > reserved:
		dst = append(dst, make([]byte, n-reserved)...)
		copy(dst[start+n:], dst[start+reserved:start+reserved+size])
	}
	protowire.AppendVarint(dst[start:start], uint64(size))
	return dst
}

// Bounds on the enrichment's text fields. The sources clip third-party
// names to them and refuse longer ones in our own files; the stores
// reject a flow over them, so one hostile flow cannot bloat rows or rollup
// keys.
const (
	MaxNameBytes        = 200 // countries, AS, network and interface names, roles, sites
	MaxDescriptionBytes = 256 // in_if_description, out_if_description
)

// ClipText cuts s to at most max bytes without splitting a UTF-8 sequence.
func ClipText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
