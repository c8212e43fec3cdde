package mocker

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// loadSources loads files with the enricher's own loader.
func loadSources(t *testing.T, cfg sources.Config) *sources.Set {
	t.Helper()
	l, err := sources.NewLoader(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l.Current()
}

// demoSources is the shipped demo files as the enricher reads them.
func demoSources(t *testing.T) *sources.Set {
	return loadSources(t, sources.Config{
		NetworksFile:  filepath.Join("..", "config", "demo-networks.yml"),
		ExportersFile: filepath.Join("..", "config", "demo-exporters.yml"),
	})
}

// TestRealisticFlowsMatchDemoFiles: every flow of the realistic plan, read
// through the enricher's view of the demo files, goes through a known
// exporter; inbound flows come from a RemoteNetworks prefix (with its AS) in
// on an external interface and go out on an internal one to a customer at
// the exporter's site; outbound flows the reverse; NetFlow v5 flows are
// IPv4 with sampling rate 0.
func TestRealisticFlowsMatchDemoFiles(t *testing.T) {
	set := demoSources(t)
	remoteAS := func(a netip.Addr) (uint32, bool) {
		for _, n := range RemoteNetworks {
			for _, p := range n.Prefixes {
				if p.Prefix.Contains(a) {
					return n.ASN, true
				}
			}
		}
		return 0, false
	}
	const n = 50_000
	g := NewPlanGenerator(5, demoPlan(t))
	var m pb.FlowMessage
	var inbound, outbound, v5, v5Bad, bad int
	speeds := map[uint64]int{}
	perAS := map[uint32]int{}
	for i := 0; i < n; i++ {
		g.Next(&m, time.Unix(1_800_000_000, 0))
		samp, _ := netip.AddrFromSlice(m.SamplerAddress)
		src, _ := netip.AddrFromSlice(m.SrcAddr)
		dst, _ := netip.AddrFromSlice(m.DstAddr)
		e, ok := set.Exporter(samp)
		if !ok {
			t.Fatalf("flow %d: exporter %s is not in demo-exporters.yml", i, samp)
		}
		in, okIn := e.Interfaces[m.InIf]
		out, okOut := e.Interfaces[m.OutIf]
		if !okIn || !okOut {
			t.Fatalf("flow %d: interfaces %d/%d are not both in %s's list", i, m.InIf, m.OutIf, e.Name)
		}
		speeds[in.Speed]++
		speeds[out.Speed]++
		if m.Type == pb.FlowMessage_NETFLOW_V5 {
			v5++
			if m.Etype != etypeIPv4 || m.SamplingRate != 0 {
				v5Bad++
			}
		}
		remote, local, localAS, remoteASField := src, dst, m.DstAs, m.SrcAs
		if in.Boundary == sources.BoundaryExternal && out.Boundary == sources.BoundaryInternal {
			inbound++
		} else if in.Boundary == sources.BoundaryInternal && out.Boundary == sources.BoundaryExternal {
			outbound++
			remote, local, localAS, remoteASField = dst, src, m.SrcAs, m.DstAs
		} else {
			t.Fatalf("flow %d: in %s (%v), out %s (%v): want one external and one internal", i, in.Name, in.Boundary, out.Name, out.Boundary)
		}
		net, ok := set.Network(local)
		_, site, _ := strings.Cut(e.Name, ".")
		asn, okAS := remoteAS(remote)
		if !ok || net.Role != "customer" || net.Site != site || localAS != 0 || !okAS || asn != remoteASField {
			bad++
			if bad <= 5 {
				t.Errorf("flow %d via %s: local %s is %+v (AS %d), remote %s AS %d (flow says %d)", i, e.Name, local, net, localAS, remote, asn, remoteASField)
			}
		}
		perAS[asn]++
	}
	if inbound+outbound != n || bad != 0 || v5Bad != 0 {
		t.Fatalf("%d inbound + %d outbound of %d flows; %d with a wrong local or remote side; %d of %d NetFlow v5 flows IPv6 or with a rate",
			inbound, outbound, n, bad, v5Bad, v5)
	}
	if v5 == 0 {
		t.Errorf("no NetFlow v5 flow, want the demo's v5 exporter to send some")
	}
	// An access network downloads more than it sends: about inboundShare.
	if share := float64(inbound) / n; share < inboundShare-0.02 || share > inboundShare+0.02 {
		t.Errorf("inbound share %.3f, want %.2f ± 0.02", share, inboundShare)
	}
	for s := range speeds {
		if s != 10e9 && s != 100e9 && s != 400e9 {
			t.Errorf("interface speed %d bit/s, want 10, 100 or 400 Gbit/s", s)
		}
	}
	// A few networks dominate: the three biggest carry over 40% of flows.
	var counts []int
	for _, c := range perAS {
		counts = append(counts, c)
	}
	top := topK(counts, 3)
	t.Logf("%d inbound, %d outbound, %d NetFlow v5; %d remote ASes, top 3 carry %d flows", inbound, outbound, v5, len(perAS), top)
	if top*100 <= 40*n {
		t.Errorf("the 3 biggest remote networks carry %d of %d flows, want over 40%%", top, n)
	}
}

func topK(v []int, k int) int {
	sum := 0
	for range k {
		best := -1
		for i, x := range v {
			if best < 0 || x > v[best] {
				best = i
			}
		}
		if best < 0 {
			break
		}
		sum += v[best]
		v[best] = -1
	}
	return sum
}

// geodataDir is where `make geodata` puts the ip-location-db packages.
func geodataDir() string {
	if d := os.Getenv("FLOWPIPELINE_GEODATA"); d != "" {
		return d
	}
	return filepath.Join("..", ".cache", "geodata")
}

// TestRemoteNetworksGeodata: the enricher, on the real ip-location-db data,
// resolves the first and last address of every built-in prefix, and every
// remote host a generator draws, to the AS and country the table claims.
func TestRemoteNetworksGeodata(t *testing.T) {
	d := geodataDir()
	cfg := sources.Config{
		CountryFile: filepath.Join(d, "geo-whois-asn-country-mmdb", "geo-whois-asn-country.mmdb"),
		ASNFiles:    []string{filepath.Join(d, "asn", "asn-ipv4.csv"), filepath.Join(d, "asn", "asn-ipv6.csv")},
	}
	for _, p := range append([]string{cfg.CountryFile}, cfg.ASNFiles...) {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "the ip-location-db data is not fetched (%v); run `make geodata`", err)
		}
	}
	set := loadSources(t, cfg)
	// withCountry: the country too. Inside a prefix it may vary (anycast
	// and CDN ranges are registered per country), so the hosts' are not
	// checked.
	check := func(a netip.Addr, n *RemoteNetwork, wantCountry string) bool {
		asn, name, ok := set.ASN(a)
		country := set.Country(a)
		if !ok || asn != n.ASN || name != n.Name || (wantCountry != "" && country != wantCountry) {
			t.Errorf("%s: the data says AS%d %q %s, the table AS%d %q %s", a, asn, name, country, n.ASN, n.Name, wantCountry)
			return false
		}
		return true
	}
	prefixes, v4, v6 := 0, 0, 0
	for i := range RemoteNetworks {
		n := &RemoteNetworks[i]
		for _, rp := range n.Prefixes {
			p := rp.Prefix
			prefixes++
			if p.Addr().Is4() {
				v4++
			} else {
				v6++
			}
			if rp.Country == "" {
				t.Errorf("%s: no country in the table", p)
			}
			check(p.Addr(), n, rp.Country)
			check(lastAddr(p), n, rp.Country)
		}
	}
	if v4 == 0 || v6 == 0 {
		t.Errorf("%d IPv4 and %d IPv6 prefixes, want both families", v4, v6)
	}
	// Every remote host of a generator, as the flows carry them.
	g := NewPlanGenerator(1, demoPlan(t))
	hosts, wrong := 0, 0
	for fam := range g.real.remote {
		for _, h := range g.real.remote[fam] {
			a := netip.AddrFrom4([4]byte(h.addr[:4]))
			if h.v6 {
				a = netip.AddrFrom16(h.addr)
			}
			n := networkOfAS(h.asn)
			hosts++
			if n == nil || !check(a, n, "") {
				if wrong++; wrong > 5 {
					t.Fatalf("more than 5 remote hosts resolve wrongly")
				}
			}
		}
	}
	if hosts != remoteHostsV4+remoteHostsV6 {
		t.Errorf("%d remote hosts checked, want %d", hosts, remoteHostsV4+remoteHostsV6)
	}
	t.Logf("%d networks, %d prefixes (%d IPv4, %d IPv6), %d remote hosts checked", len(RemoteNetworks), prefixes, v4, v6, hosts)
}

func networkOfAS(asn uint32) *RemoteNetwork {
	for i := range RemoteNetworks {
		if RemoteNetworks[i].ASN == asn {
			return &RemoteNetworks[i]
		}
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestParsePlanErrors: files the realistic plan cannot use are refused with
// a message saying why.
func TestParsePlanErrors(t *testing.T) {
	const nets = "networks:\n  198.51.100.0/24: {name: c, role: customer, site: par1}\n"
	const exps = "exporters:\n  192.0.2.1:\n    name: r1.par1\n    interfaces:\n      1: {name: a, boundary: external}\n"
	for _, tc := range []struct {
		name, nets, exps, want string
	}{
		{"no customer", "networks:\n  198.51.100.0/24: {name: c, role: infrastructure}\n", exps, "no prefix with role customer"},
		{"bad prefix", "networks:\n  198.51.100.1/24: {name: c, role: customer}\n", exps, `key "198.51.100.1/24" is not a prefix`},
		{"tiny prefix", "networks:\n  198.51.100.0/31: {name: c, role: customer}\n", exps, "too small"},
		{"no exporter", nets, "exporters: {}\n", "no exporter"},
		{"IPv6 exporter", nets, "exporters:\n  2001:db8::1: {name: r}\n", "not an IPv4 address"},
		{"no interface", nets, "exporters:\n  192.0.2.1: {name: r}\n", "has no interface"},
		{"not YAML", "networks: [", exps, "networks file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePlan([]byte(tc.nets), []byte(tc.exps))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	p, err := ParsePlan([]byte(nets), []byte(exps))
	if err != nil || len(p.Customers) != 1 || len(p.Exporters) != 1 || p.Exporters[0].Site != "par1" ||
		len(p.Exporters[0].External) != 1 || p.Exporters[0].Type != pb.FlowMessage_IPFIX {
		t.Fatalf("minimal plan: %+v, %v", p, err)
	}
	// A file that cannot be read names the flag's field; New refuses it as
	// a configuration error.
	_, err = New(Config{Brokers: []string{"127.0.0.1:1"}, NetworksFile: filepath.Join(t.TempDir(), "missing.yml")}, testLogger(t), prometheus.NewRegistry())
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "Config.NetworksFile") {
		t.Fatalf("New with a missing networks file: %v", err)
	}
}

// TestDemoPlan: the embedded demo files make the plan the docs describe.
func TestDemoPlan(t *testing.T) {
	p := demoPlan(t)
	var got []string
	for _, e := range p.Exporters {
		got = append(got, e.Addr.String()+" "+e.Name+" "+e.Type.String())
	}
	want := []string{"192.0.2.1 edge1.par1 IPFIX", "192.0.2.2 edge1.nyc1 SFLOW_5", "192.0.2.3 edge1.fra1 NETFLOW_V9", "192.0.2.4 edge2.par1 NETFLOW_V5"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("exporters %q, want %q", got, want)
	}
	sites := map[string]int{}
	for _, c := range p.Customers {
		sites[c.Site]++
	}
	if len(p.Customers) != 11 || sites["par1"] != 4 || sites["fra1"] != 3 || sites["nyc1"] != 4 {
		t.Errorf("%d customer prefixes by site %v, want 11: par1 4, fra1 3, nyc1 4", len(p.Customers), sites)
	}
}

// TestRealisticFlowsEnriched: the enricher, with the real ip-location-db
// data and the shipped demo files, names every part of every realistic
// flow: the remote side's AS (as the table says) and country, the local
// customer, the exporter, both interfaces with their boundaries, and the
// NetFlow v5 flows' sampling rate.
func TestRealisticFlowsEnriched(t *testing.T) {
	d := geodataDir()
	cfg := sources.Config{
		CountryFile:   filepath.Join(d, "geo-whois-asn-country-mmdb", "geo-whois-asn-country.mmdb"),
		ASNFiles:      []string{filepath.Join(d, "asn", "asn-ipv4.csv"), filepath.Join(d, "asn", "asn-ipv6.csv")},
		NetworksFile:  filepath.Join("..", "config", "demo-networks.yml"),
		ExportersFile: filepath.Join("..", "config", "demo-exporters.yml"),
	}
	for _, p := range append([]string{cfg.CountryFile}, cfg.ASNFiles...) {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "the ip-location-db data is not fetched (%v); run `make geodata`", err)
		}
	}
	set := loadSources(t, cfg)
	plan := demoPlan(t)
	v5Rate := map[netip.Addr]uint64{}
	for _, e := range plan.Exporters {
		if e.Type == pb.FlowMessage_NETFLOW_V5 {
			v5Rate[e.Addr] = e.SamplingRate
		}
	}
	const n = 20_000
	g := NewPlanGenerator(1, plan)
	var m pb.FlowMessage
	var e pb.Enrichment
	var c sources.LookupCounts
	var remoteOK, localOK, exporterOK, rateFilled, rateWrong int
	countries := map[string]int{}
	for i := 0; i < n; i++ {
		g.Next(&m, time.Unix(1_800_000_000, 0))
		enricher.Enrich(set, &m, &e, enricher.Options{}, &c)
		remoteAS, remoteName, remoteCountry := m.SrcAs, e.SrcAsName, e.SrcCountry
		localName, localRole := e.DstNetName, e.DstNetRole
		if m.SrcAs == 0 { // outbound
			remoteAS, remoteName, remoteCountry = m.DstAs, e.DstAsName, e.DstCountry
			localName, localRole = e.SrcNetName, e.SrcNetRole
		}
		if n := networkOfAS(remoteAS); n != nil && remoteName == n.Name && remoteCountry != "" {
			remoteOK++
		}
		countries[remoteCountry]++
		if localName != "" && localRole == "customer" {
			localOK++
		}
		if e.ExporterName != "" && e.InIfName != "" && e.OutIfName != "" && e.InIfSpeed != 0 && e.OutIfSpeed != 0 &&
			e.InIfBoundary != e.OutIfBoundary && e.InIfBoundary != pb.FlowMessage_BOUNDARY_UNDEFINED && e.OutIfBoundary != pb.FlowMessage_BOUNDARY_UNDEFINED {
			exporterOK++
		}
		samp, _ := netip.AddrFromSlice(m.SamplerAddress)
		if want, v5 := v5Rate[samp]; v5 && m.SamplingRate == 0 && e.SamplingRate == want {
			rateFilled++
		} else if v5 || e.SamplingRate != 0 {
			rateWrong++
		}
	}
	t.Logf("%d flows: remote countries %v; %d NetFlow v5 flows got their rate from the exporters file", n, countries, rateFilled)
	if remoteOK != n || localOK != n || exporterOK != n || rateWrong != 0 || rateFilled == 0 {
		t.Fatalf("of %d flows: %d remote sides named as the table, %d local customers, %d exporters with both interfaces; %d rates filled, %d wrong",
			n, remoteOK, localOK, exporterOK, rateFilled, rateWrong)
	}
	if len(countries) < 5 {
		t.Errorf("remote sides in %d countries, want several", len(countries))
	}
}
