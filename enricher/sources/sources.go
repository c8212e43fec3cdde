// Package sources loads the enricher's data sources (a country MMDB, ASN
// MMDBs or range CSVs, a networks file and an exporters file), answers
// lookups on an immutable snapshot of them (Set), and reloads them on SIGHUP
// or when a file changes, swapping the snapshot atomically (Loader).
//
// Lookups on a Set never allocate and never lock, so the enricher's hot path
// can call them once per address; counting them is left to the caller
// (LookupCounts), batched, because a Prometheus counter per lookup would
// cost more than the lookup.
package sources

import (
	"net/netip"

	"github.com/gaissmai/bart"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Boundary says whether an interface faces the outside (transit, peering,
// customers) or the inside of the network: the wire enum itself.
type Boundary = pb.FlowMessage_Boundary

// The Boundary values.
const (
	BoundaryUndefined = pb.FlowMessage_BOUNDARY_UNDEFINED
	BoundaryExternal  = pb.FlowMessage_BOUNDARY_EXTERNAL
	BoundaryInternal  = pb.FlowMessage_BOUNDARY_INTERNAL
)

// Network is what the networks file says about a prefix.
type Network struct {
	Name, Role, Site, Region, Tenant string
}

// Interface is what the exporters file says about one interface of an exporter.
type Interface struct {
	Name, Description string
	Speed             uint64 // bit/s
	Boundary          Boundary
}

// Exporter is what the exporters file says about one exporter (sampler address).
type Exporter struct {
	Name            string
	SamplingRate    uint64 // used when a flow carries 0
	DefaultBoundary Boundary
	Interfaces      map[uint32]Interface // by ifIndex; Boundary already defaulted
}

// Set is an immutable snapshot of every loaded source. Its lookups are safe
// for concurrent use, and a nil *Set (or a Set without a source) answers
// every lookup with "unknown".
type Set struct {
	country   *countryDB
	asn       []asnSource // tried in the order of Config.ASNFiles; first hit wins
	networks  *bart.Table[*Network]
	exporters map[netip.Addr]*Exporter

	// What each part was loaded from, so a reload of one changed file can
	// reuse the other parts.
	parts map[string]any
}

// Country returns the ISO 3166-1 alpha-2 code of a's country, or "" when
// unknown or no country source is loaded.
func (s *Set) Country(a netip.Addr) string {
	if s == nil || s.country == nil {
		return ""
	}
	return s.country.lookup(a.Unmap())
}

// ASN returns a's autonomous system number and organisation name.
func (s *Set) ASN(a netip.Addr) (asn uint32, name string, ok bool) {
	if s == nil {
		return 0, "", false
	}
	a = a.Unmap()
	for _, src := range s.asn {
		if asn, name, ok = src.lookup(a); ok {
			return asn, name, true
		}
	}
	return 0, "", false
}

// Network returns what the networks file says about the most specific
// prefix holding a.
func (s *Set) Network(a netip.Addr) (Network, bool) {
	if s == nil || s.networks == nil {
		return Network{}, false
	}
	n, ok := s.networks.Lookup(a.Unmap())
	if !ok {
		return Network{}, false
	}
	return *n, true
}

// Exporter returns what the exporters file says about the exporter whose
// sampler address is a. The *Exporter is shared: do not modify it.
func (s *Set) Exporter(a netip.Addr) (*Exporter, bool) {
	if s == nil || s.exporters == nil {
		return nil, false
	}
	e, ok := s.exporters[a.Unmap()]
	return e, ok
}
