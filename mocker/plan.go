package mocker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/spendletonliveaction/flow-pipeline/config"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// The address plans Config.Addresses names.
const (
	// AddressesRealistic draws the remote side of each flow from real public
	// prefixes of well-known networks (RemoteNetworks) and the local side
	// from the customer prefixes of a networks file, through the exporters
	// and interfaces of an exporters file.
	AddressesRealistic = "realistic"
	// AddressesDocumentation keeps every address in documentation and
	// private space, with private AS numbers (the original plan).
	AddressesDocumentation = "documentation"
)

// RemoteNetwork is one real network of the built-in table: its AS number
// and name, and its prefixes with their countries, as the ip-location-db
// data (`make geodata`) says; TestRemoteNetworksGeodata checks them.
type RemoteNetwork struct {
	Name     string
	ASN      uint32
	Prefixes []RemotePrefix
}

// RemotePrefix is one prefix of a RemoteNetwork and the country the data
// gives its first and last address (ISO 3166-1 alpha-2).
type RemotePrefix struct {
	Prefix  netip.Prefix
	Country string
}

// pfx reads "prefix country" pairs.
func pfx(s ...string) []RemotePrefix {
	out := make([]RemotePrefix, len(s))
	for i, v := range s {
		p, c, _ := strings.Cut(v, " ")
		out[i] = RemotePrefix{netip.MustParsePrefix(p), c}
	}
	return out
}

// RemoteNetworks is the remote side of realistic flows, most traffic
// first: network k gets a share proportional to 1/(k+1) (Zipf), so the
// few big content networks dominate, as they do on real links.
var RemoteNetworks = []RemoteNetwork{
	{"Google LLC", 15169, pfx("142.250.0.0/15 US", "8.8.8.0/24 US", "2a00:1450::/32 IE")},
	{"Netflix Streaming Services Inc.", 2906, pfx("23.246.0.0/20 US", "2607:fb10::/32 US")},
	{"Facebook, Inc.", 32934, pfx("31.13.64.0/18 IE", "31.13.24.0/21 IE", "2a03:2880::/32 IE")},
	{"Amazon.com, Inc.", 16509, pfx("13.32.0.0/15 US", "52.94.0.0/22 US")},
	{"Cloudflare, Inc.", 13335, pfx("1.1.1.0/24 AU", "104.16.0.0/14 US")},
	{"Microsoft Corporation", 8075, pfx("13.107.64.0/18 US")},
	{"Akamai International B.V.", 20940, pfx("2.16.0.0/23 NL")},
	{"Apple Inc.", 714, pfx("17.0.0.0/9 US")},
	{"Comcast Cable Communications, LLC", 7922, pfx("73.0.0.0/8 US", "24.0.0.0/12 US", "2601::/24 US")},
	{"Deutsche Telekom AG", 3320, pfx("2.160.0.0/12 DE", "2003::/24 DE")},
	{"Orange S.A.", 3215, pfx("2.3.0.0/16 FR")},
	{"Free SAS", 12322, pfx("78.192.0.0/12 FR")},
	{"NTT America, Inc.", 2914, pfx("2001:218::/35 AU")},
	{"Hetzner Online GmbH", 24940, pfx("5.9.0.0/16 DE", "2a01:4f8::/32 DE")},
	{"OVH SAS", 16276, pfx("51.68.0.0/16 FR")},
	{"Telecom Italia S.p.A.", 3269, pfx("2.112.0.0/13 IT", "2a01:2000::/20 IT")},
	{"Virgin Media Limited", 5089, pfx("86.0.0.0/12 GB", "62.30.0.0/15 GB")},
	{"CHINA UNICOM China169 Backbone", 4837, pfx("60.0.0.0/13 CN")},
	{"Internet Initiative Japan Inc.", 2497, pfx("202.232.0.0/16 JP")},
	{"Wikimedia Foundation Inc.", 14907, pfx("103.102.166.0/24 US")},
}

// Plan is what the realistic address plan draws from: the local customer
// prefixes (a networks file) and the exporters with their interfaces (an
// exporters file).
type Plan struct {
	Customers []Customer
	Exporters []PlanExporter
}

// Customer is one customer prefix of a networks file.
type Customer struct {
	Name, Site string
	Prefix     netip.Prefix
}

// PlanExporter is one exporter of an exporters file, with the flow protocol
// the mocker sends for it.
type PlanExporter struct {
	Addr         netip.Addr
	Name, Site   string // Site: the part of Name after its first dot ("edge1.par1": "par1")
	Type         pb.FlowMessage_FlowType
	SamplingRate uint64 // the file's rate; what the flows carry, except NetFlow v5's 0
	External     []PlanInterface
	Internal     []PlanInterface
}

// PlanInterface is one interface of an exporter.
type PlanInterface struct {
	Index uint32
	Name  string
	Speed uint64 // bit/s
}

// exporterTypes are the protocols the mocker sends, by the exporters'
// address order.
var exporterTypes = []pb.FlowMessage_FlowType{pb.FlowMessage_IPFIX, pb.FlowMessage_SFLOW_5, pb.FlowMessage_NETFLOW_V9, pb.FlowMessage_NETFLOW_V5}

// DemoPlan is the plan of the embedded demo files (config/).
func DemoPlan() (*Plan, error) {
	return ParsePlan(config.DemoNetworks, config.DemoExporters)
}

// LoadPlan reads a plan from a networks and an exporters file; an empty
// name stands for the embedded demo file.
func LoadPlan(networksFile, exportersFile string, read func(string) ([]byte, error)) (*Plan, error) {
	nets, exps := config.DemoNetworks, config.DemoExporters
	var err error
	if networksFile != "" {
		if nets, err = read(networksFile); err != nil {
			return nil, fmt.Errorf("read the networks file: %w", err)
		}
	}
	if exportersFile != "" {
		if exps, err = read(exportersFile); err != nil {
			return nil, fmt.Errorf("read the exporters file: %w", err)
		}
	}
	return ParsePlan(nets, exps)
}

// The subset of the enricher's file formats the mocker needs; other keys
// are the enricher's business, so they are not refused here.
type planNetworks struct {
	Networks map[string]struct {
		Name string `yaml:"name"`
		Role string `yaml:"role"`
		Site string `yaml:"site"`
	} `yaml:"networks"`
}

type planExporters struct {
	Exporters map[string]struct {
		Name            string `yaml:"name"`
		SamplingRate    uint64 `yaml:"sampling_rate"`
		DefaultBoundary string `yaml:"default_boundary"`
		Interfaces      map[uint32]struct {
			Name     string `yaml:"name"`
			Speed    uint64 `yaml:"speed"`
			Boundary string `yaml:"boundary"`
		} `yaml:"interfaces"`
	} `yaml:"exporters"`
}

func decodePlanYAML(data []byte, v any) error {
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// ParsePlan reads a networks file and an exporters file (the enricher's
// formats). The plan needs at least one customer prefix (role customer) and
// one exporter with an interface.
func ParsePlan(networks, exporters []byte) (*Plan, error) {
	var nf planNetworks
	if err := decodePlanYAML(networks, &nf); err != nil {
		return nil, fmt.Errorf("networks file: %w", err)
	}
	var ef planExporters
	if err := decodePlanYAML(exporters, &ef); err != nil {
		return nil, fmt.Errorf("exporters file: %w", err)
	}
	p := &Plan{}
	for k, v := range nf.Networks {
		if v.Role != "customer" {
			continue
		}
		pre, err := netip.ParsePrefix(k)
		if err != nil || pre != pre.Masked() || pre.Addr().Is4In6() {
			return nil, fmt.Errorf("networks file: key %q is not a prefix like 192.0.2.0/24 or 2001:db8::/32 without host bits", k)
		}
		if (pre.Addr().Is4() && pre.Bits() > 30) || (pre.Addr().Is6() && pre.Bits() > 126) {
			return nil, fmt.Errorf("networks file: customer prefix %s is too small to hold hosts", k)
		}
		p.Customers = append(p.Customers, Customer{Name: v.Name, Site: v.Site, Prefix: pre})
	}
	// Map order is random: sort, so the same seed gives the same flows.
	slices.SortFunc(p.Customers, func(a, b Customer) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	if len(p.Customers) == 0 {
		return nil, errors.New("networks file: no prefix with role customer; the mocker draws the local side of flows from them")
	}

	for k, v := range ef.Exporters {
		a, err := netip.ParseAddr(k)
		if err != nil || a.Zone() != "" || !a.Unmap().Is4() {
			return nil, fmt.Errorf("exporters file: key %q is not an IPv4 address; the mocker sends from IPv4 exporters only", k)
		}
		e := PlanExporter{Addr: a.Unmap(), Name: v.Name, SamplingRate: v.SamplingRate}
		if _, site, ok := strings.Cut(v.Name, "."); ok {
			e.Site = site
		}
		for idx, in := range v.Interfaces {
			b := in.Boundary
			if b == "" {
				b = v.DefaultBoundary
			}
			pi := PlanInterface{Index: idx, Name: in.Name, Speed: in.Speed}
			switch b {
			case "external":
				e.External = append(e.External, pi)
			default: // internal, or undefined: inside as far as the direction goes
				e.Internal = append(e.Internal, pi)
			}
		}
		byIndex := func(a, b PlanInterface) int { return int(a.Index) - int(b.Index) }
		slices.SortFunc(e.External, byIndex)
		slices.SortFunc(e.Internal, byIndex)
		if len(e.External)+len(e.Internal) == 0 {
			return nil, fmt.Errorf("exporters file: exporter %s has no interface", k)
		}
		p.Exporters = append(p.Exporters, e)
	}
	slices.SortFunc(p.Exporters, func(a, b PlanExporter) int { return a.Addr.Compare(b.Addr) })
	if len(p.Exporters) == 0 {
		return nil, errors.New("exporters file: no exporter")
	}
	for i := range p.Exporters {
		p.Exporters[i].Type = exporterTypes[i%len(exporterTypes)]
	}
	return p, nil
}

// realPlan is the realistic plan prepared for drawing.
type realPlan struct {
	remote    [2][]host // by family: 0 IPv4, 1 IPv6
	remoteZ   [2]*zipfTable
	local     [2][]host
	localSite [2][]int // local host -> site index
	localZ    [2]*zipfTable
	exporters []realExporter
	// expCDF[site][family]: the exporters at the site that carry the family
	// (NetFlow v5 carries IPv4 only), weighted by external capacity.
	expCDF  [][2][]float64
	expIdx  [][2][]int
	sites   []string
	inbound float64 // share of flows from remote to local
}

type realExporter struct {
	exporter
	external, internal []uint32
}

const (
	remoteHostsV4 = 4000
	remoteHostsV6 = 1000
	localHostsV4  = 1200
	localHostsV6  = 300
	inboundShare  = 0.75 // an access network downloads more than it sends
)

func newRealPlan(rng *rand.Rand, p *Plan) *realPlan {
	rp := &realPlan{inbound: inboundShare}

	// Remote hosts: network k with probability ∝ 1/(k+1) among the networks
	// with a prefix of the family, then one of its prefixes, then an address.
	for fam, n := range [2]int{remoteHostsV4, remoteHostsV6} {
		var nets []*RemoteNetwork
		var pres [][]netip.Prefix
		for i := range RemoteNetworks {
			var ps []netip.Prefix
			for _, pr := range RemoteNetworks[i].Prefixes {
				if pr.Prefix.Addr().Is6() == (fam == 1) {
					ps = append(ps, pr.Prefix)
				}
			}
			if len(ps) > 0 {
				nets = append(nets, &RemoteNetworks[i])
				pres = append(pres, ps)
			}
		}
		c := cdf(len(nets), func(i int) float64 { return 1 / float64(i+1) })
		hs := make([]host, n)
		for i := range hs {
			k := pick(c, rng.Float64())
			pr := pres[k][rng.IntN(len(pres[k]))]
			hs[i] = hostIn(rng, pr, nets[k].ASN)
		}
		rp.remote[fam], rp.remoteZ[fam] = hs, newZipfTable(n, zipfS)
	}

	// Local hosts: customer prefixes, the first ones bigger (Zipf over the
	// prefixes of the family); local AS 0, as exporters report their own.
	siteIdx := map[string]int{}
	site := func(s string) int {
		i, ok := siteIdx[s]
		if !ok {
			i = len(rp.sites)
			siteIdx[s] = i
			rp.sites = append(rp.sites, s)
		}
		return i
	}
	for fam, n := range [2]int{localHostsV4, localHostsV6} {
		var cs []Customer
		for _, c := range p.Customers {
			if c.Prefix.Addr().Is6() == (fam == 1) {
				cs = append(cs, c)
			}
		}
		if len(cs) == 0 {
			continue // no flows of this family
		}
		c := cdf(len(cs), func(i int) float64 { return 1 / float64(i+1) })
		hs := make([]host, n)
		sites := make([]int, n)
		for i := range hs {
			k := pick(c, rng.Float64())
			hs[i] = hostIn(rng, cs[k].Prefix, 0)
			sites[i] = site(cs[k].Site)
		}
		rp.local[fam], rp.localSite[fam], rp.localZ[fam] = hs, sites, newZipfTable(n, zipfS)
	}

	for _, e := range p.Exporters {
		re := realExporter{exporter: exporter{typ: e.Type, rate: e.SamplingRate, seq: 1}}
		re.addr = e.Addr.As4()
		if e.Type == pb.FlowMessage_NETFLOW_V5 {
			re.rate = 0 // v5 has no sampling rate of its own here: the exporters file has it
		}
		var capacity float64
		for _, in := range e.External {
			re.external = append(re.external, in.Index)
			capacity += float64(in.Speed)
		}
		for _, in := range e.Internal {
			re.internal = append(re.internal, in.Index)
		}
		if len(re.external) == 0 {
			re.external = re.internal
		}
		if len(re.internal) == 0 {
			re.internal = re.external
		}
		re.weight = max(capacity, 1)
		rp.exporters = append(rp.exporters, re)
	}

	// Per site and family: the exporters at that site, or all when none is.
	rp.expCDF = make([][2][]float64, len(rp.sites))
	rp.expIdx = make([][2][]int, len(rp.sites))
	for s, name := range rp.sites {
		for fam := range 2 {
			var idx []int
			for _, all := range []bool{false, true} {
				for i, e := range p.Exporters {
					if (all || e.Site == name) && (fam == 0 || e.Type != pb.FlowMessage_NETFLOW_V5) {
						idx = append(idx, i)
					}
				}
				if len(idx) > 0 {
					break
				}
			}
			if len(idx) == 0 { // only NetFlow v5 exporters: IPv6 flows go through them anyway
				for i := range p.Exporters {
					idx = append(idx, i)
				}
			}
			rp.expIdx[s][fam] = idx
			rp.expCDF[s][fam] = cdf(len(idx), func(i int) float64 { return rp.exporters[idx[i]].weight })
		}
	}
	return rp
}

// hostIn draws an address inside p (not its first address, the gateway
// next hop, nor the IPv4 broadcast).
func hostIn(rng *rand.Rand, p netip.Prefix, asn uint32) host {
	h := host{asn: asn, net: uint32(p.Bits())}
	base := p.Addr()
	if base.Is4() {
		b := base.As4()
		size := uint32(1) << (32 - p.Bits())
		v := binary.BigEndian.Uint32(b[:]) + 2 + rng.Uint32N(size-3)
		binary.BigEndian.PutUint32(h.addr[:4], v)
		h.nextV4 = b
		h.nextV4[3]++
		return h
	}
	h.v6 = true
	b := base.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if p.Bits() < 64 {
		hi |= rng.Uint64() & (1<<(64-p.Bits()) - 1)
		lo = rng.Uint64() | 2
	} else {
		lo |= rng.Uint64()&(1<<(128-p.Bits())-1) | 2
	}
	binary.BigEndian.PutUint64(h.addr[:8], hi)
	binary.BigEndian.PutUint64(h.addr[8:], lo)
	h.nextV6 = b
	h.nextV6[15] |= 1
	return h
}

// nextReal is Next for the realistic plan.
func (g *Generator) nextReal(m *pb.FlowMessage, now time.Time) {
	r, rp := g.rng, g.real
	srcBuf, dstBuf, samplerBuf, hopBuf := m.SrcAddr[:0], m.DstAddr[:0], m.SamplerAddress[:0], m.NextHop[:0]
	m.Reset()

	fam := 0
	if rp.local[1] != nil && r.Float64() < ipv6Share {
		fam = 1
	}
	li := rp.localZ[fam].draw(r.Uint64())
	local := &rp.local[fam][li]
	remote := &rp.remote[fam][rp.remoteZ[fam].draw(r.Uint64())]
	s := rp.localSite[fam][li]
	e := &rp.exporters[rp.expIdx[s][fam][pick(rp.expCDF[s][fam], r.Float64())]]

	m.Type = e.typ
	m.SamplingRate = e.rate
	m.SequenceNum = e.seq
	e.seq++
	m.SamplerAddress = append(samplerBuf, e.addr[:]...)

	ext := e.external[r.IntN(len(e.external))]
	in := e.internal[r.IntN(len(e.internal))]
	src, dst := remote, local
	m.InIf, m.OutIf = ext, in
	if r.Float64() >= rp.inbound {
		src, dst = local, remote
		m.InIf, m.OutIf = in, ext
	}
	v6 := fam == 1
	size := 4
	m.Etype = etypeIPv4
	if v6 {
		size = 16
		m.Etype = etypeIPv6
	}
	m.SrcAddr = append(srcBuf, src.addr[:size]...)
	m.DstAddr = append(dstBuf, dst.addr[:size]...)
	if v6 {
		m.NextHop = append(hopBuf, dst.nextV6[:]...)
		m.Ipv6FlowLabel = r.Uint32() & 0xfffff
	} else {
		m.NextHop = append(hopBuf, dst.nextV4[:]...)
	}
	m.SrcAs, m.DstAs = src.asn, dst.asn
	m.SrcNet, m.DstNet = src.net, dst.net
	g.fillTraffic(m, v6, now)
}
