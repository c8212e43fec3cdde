package enricher

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Options are the enrichment choices beside the data.
type Options struct {
	// ASNOverride takes src_as and dst_as from the ASN data even when the
	// exporter sent a non-zero AS number; by default only 0 is replaced.
	ASNOverride bool
}

// addr reads a pb address (4 or 16 bytes; IPv4-mapped IPv6 is unmapped
// by the sources).
func addr(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Enrich fills e (reset first) with what set says about m: countries,
// AS numbers (when the exporter sent 0, or always with o.ASNOverride) and
// the names of the resulting AS numbers, networks, exporter, interfaces,
// boundaries, and the sampling rate when the flow carries 0. It counts
// each lookup in c. It does not allocate.
func Enrich(set *sources.Set, m *pb.FlowMessage, e *pb.Enrichment, o Options, c *sources.LookupCounts) {
	e.Reset()
	src, dst := addr(m.SrcAddr), addr(m.DstAddr)

	e.SrcCountry = set.Country(src)
	c.Count(sources.SourceCountry, e.SrcCountry != "")
	e.DstCountry = set.Country(dst)
	c.Count(sources.SourceCountry, e.DstCountry != "")

	e.SrcAs, e.SrcAsName = enrichAS(set, src, m.SrcAs, o, c)
	e.DstAs, e.DstAsName = enrichAS(set, dst, m.DstAs, o, c)

	if n, ok := set.Network(src); ok {
		e.SrcNetName, e.SrcNetRole, e.SrcNetSite = n.Name, n.Role, n.Site
		c.Count(sources.SourceNetwork, true)
	} else {
		c.Count(sources.SourceNetwork, false)
	}
	if n, ok := set.Network(dst); ok {
		e.DstNetName, e.DstNetRole, e.DstNetSite = n.Name, n.Role, n.Site
		c.Count(sources.SourceNetwork, true)
	} else {
		c.Count(sources.SourceNetwork, false)
	}

	exp, ok := set.Exporter(addr(m.SamplerAddress))
	c.Count(sources.SourceExporter, ok)
	if !ok {
		return
	}
	e.ExporterName = exp.Name
	if m.SamplingRate == 0 && exp.SamplingRate != 0 {
		e.SamplingRate, e.SamplingRateFromExporter = exp.SamplingRate, true
	}
	in, ok := exp.Interfaces[m.InIf]
	c.Count(sources.SourceInterface, ok)
	e.InIfName, e.InIfDescription, e.InIfSpeed, e.InIfBoundary = in.Name, in.Description, in.Speed, boundary(in, ok, exp)
	out, ok := exp.Interfaces[m.OutIf]
	c.Count(sources.SourceInterface, ok)
	e.OutIfName, e.OutIfDescription, e.OutIfSpeed, e.OutIfBoundary = out.Name, out.Description, out.Speed, boundary(out, ok, exp)
}

// enrichAS returns the AS number to write (0: keep the exporter's) and the
// name of the AS the flow ends up with. The ASN data names only the AS it
// maps the address to, so an exporter's AS that the data contradicts (and
// that is kept) gets no name.
func enrichAS(set *sources.Set, a netip.Addr, sent uint32, o Options, c *sources.LookupCounts) (uint32, string) {
	asn, name, ok := set.ASN(a)
	c.Count(sources.SourceASN, ok)
	if !ok || asn == 0 {
		return 0, ""
	}
	if sent == 0 || o.ASNOverride {
		return asn, name
	}
	if sent == asn {
		return 0, name
	}
	return 0, ""
}

// boundary is the interface's boundary (the sources default it to the
// exporter's), or the exporter's default for an interface not listed.
func boundary(i sources.Interface, listed bool, exp *sources.Exporter) pb.FlowMessage_Boundary {
	if listed {
		return pb.FlowMessage_Boundary(i.Boundary)
	}
	return pb.FlowMessage_Boundary(exp.DefaultBoundary)
}

// Transform enriches every flow of record values with the current data of
// a sources.Loader (or a fixed Set); see Enrich. It reuses one message and
// one enrichment, so it is not safe for concurrent use.
type Transform struct {
	Current func() *sources.Set
	Metrics *sources.LookupMetrics // nil: lookups not counted
	Options Options
	m       pb.FlowMessage
	e       pb.Enrichment
	counts  sources.LookupCounts
}

// NewTransform enriches with l's current data and counts lookups in l's metrics.
func NewTransform(l *sources.Loader, o Options) *Transform {
	return &Transform{Current: l.Current, Metrics: l.Metrics(), Options: o}
}

// Transform implements Transformer: each frame of value is decoded (any
// framing or decoding error rejects the record whole) and re-framed as
// its original bytes followed by the enrichment fields. A frame the
// enrichment would push above pb.MaxMessageSize goes out unchanged.
func (t *Transform) Transform(dst, value []byte) ([]byte, int, error) {
	if len(value) == 0 {
		return dst, 0, pb.ErrEmptyRecord
	}
	set := t.Current()
	start := len(dst)
	flows := 0
	// The framing loop of pb.ForEachFrame, inline: a closure here would
	// allocate on every record.
	for off := 0; off < len(value); {
		size, n := protowire.ConsumeVarint(value[off:])
		if n < 0 {
			return dst[:start], 0, fmt.Errorf("frame at byte %d: %w", off, pb.ErrBadLength)
		}
		if size > pb.MaxMessageSize {
			return dst[:start], 0, fmt.Errorf("frame at byte %d declares %d bytes: %w", off, size, pb.ErrMessageTooLarge)
		}
		off += n
		if uint64(len(value)-off) < size {
			return dst[:start], 0, fmt.Errorf("frame at byte %d declares %d bytes, %d left: %w", off-n, size, len(value)-off, pb.ErrTruncated)
		}
		frame := value[off : off+int(size)]
		off += int(size)
		if err := t.m.DecodeWire(frame); err != nil {
			return dst[:start], 0, fmt.Errorf("flow %d: %w", flows, err)
		}
		if enriched(&t.m) {
			// Appending again would repeat string fields, which ClickHouse
			// reads as empty: an enriched flow goes on as it is.
			t.e.Reset()
		} else {
			Enrich(set, &t.m, &t.e, t.Options, &t.counts)
		}
		at := len(dst)
		dst = pb.AppendEnrichedFrame(dst, frame, &t.e)
		if size, _ := protowire.ConsumeVarint(dst[at:]); size > pb.MaxMessageSize {
			// Readers would reject it: send the flow as it came.
			t.e.Reset()
			dst = pb.AppendEnrichedFrame(dst[:at], frame, &t.e)
		}
		flows++
	}
	return dst, flows, nil
}

// EndBatch implements Transformer: it publishes the lookup counts.
func (t *Transform) EndBatch() {
	if t.Metrics != nil {
		t.Metrics.Add(&t.counts)
	} else {
		t.counts = sources.LookupCounts{}
	}
}

// enriched reports whether m already holds enrichment fields.
func enriched(m *pb.FlowMessage) bool {
	return m.SrcCountry != "" || m.DstCountry != "" || m.SrcAsName != "" || m.DstAsName != "" ||
		m.SrcNetName != "" || m.DstNetName != "" || m.SrcNetRole != "" || m.DstNetRole != "" ||
		m.SrcNetSite != "" || m.DstNetSite != "" || m.ExporterName != "" || m.InIfName != "" ||
		m.OutIfName != "" || m.InIfDescription != "" || m.OutIfDescription != "" ||
		m.InIfSpeed != 0 || m.OutIfSpeed != 0 || m.InIfBoundary != 0 || m.OutIfBoundary != 0
}
