package sources

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

var (
	gbAddr   = netip.MustParseAddr("81.2.69.142")
	gbMapped = netip.MustParseAddr("::ffff:81.2.69.142")
	deAddr6  = netip.MustParseAddr("2a02:ff0::1")
	frAddr   = netip.MustParseAddr("81.2.70.1")
	nowhere  = netip.MustParseAddr("9.9.9.9")
	nowhere6 = netip.MustParseAddr("2001:db8::1")
)

func TestCountryLayouts(t *testing.T) {
	cases := []struct {
		name, dbType, layout string
		record               func(code string) mmdbtype.Map
	}{
		{"MaxMind GeoLite2 Country", "GeoLite2-Country", layoutMaxMindCountry, maxmindCountry},
		{"MaxMind GeoIP2 City", "GeoIP2-City", layoutMaxMindCountry, func(c string) mmdbtype.Map { return maxmindCity(c, "London") }},
		{"DB-IP Lite", "DBIP-Country-Lite", layoutMaxMindCountry, maxmindCountry},
		{"DB-IP City Lite", "DBIP-City-Lite", layoutMaxMindCountry, func(c string) mmdbtype.Map { return maxmindCity(c, "Paris") }},
		{"IPinfo Lite", "ipinfo lite.mmdb", layoutFlatCountry, func(c string) mmdbtype.Map { return ipinfoLite(c, "AS1", "one") }},
		{"ip-location-db", "country ipvAll", layoutFlatCountry, flatCountry},
		{"unknown type, MaxMind shape", "Some-Vendor-Geo", layoutMaxMindCountry, maxmindCountry},
		{"unknown type, flat shape", "some vendor", layoutFlatCountry, flatCountry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeMMDB(t, t.TempDir(), "c.mmdb", c.dbType, []mmdbEntry{
				{"81.2.69.0/24", c.record("GB")},
				{"81.2.70.0/24", c.record("FR")},
				{"2a02:ff0::/32", c.record("DE")},
			})
			db, err := loadCountry(path)
			if err != nil {
				t.Fatal(err)
			}
			if db.layout != c.layout {
				t.Errorf("layout %q, want %q", db.layout, c.layout)
			}
			s := &Set{country: db}
			for _, q := range []struct {
				a    netip.Addr
				want string
			}{{gbAddr, "GB"}, {gbMapped, "GB"}, {frAddr, "FR"}, {deAddr6, "DE"}, {nowhere, ""}, {nowhere6, ""}, {netip.Addr{}, ""}} {
				if got := s.Country(q.a); got != q.want {
					t.Errorf("Country(%v) = %q, want %q", q.a, got, q.want)
				}
			}
		})
	}
}

func TestCountryRejectsOtherDatabases(t *testing.T) {
	dir := t.TempDir()
	asn := writeMMDB(t, dir, "asn.mmdb", "GeoLite2-ASN", []mmdbEntry{{"8.8.8.0/24", maxmindASN(15169, "Google LLC")}})
	if _, err := loadCountry(asn); err == nil || !strings.Contains(err.Error(), "asn.mmdb") || !strings.Contains(err.Error(), "neither country.iso_code nor country_code") {
		t.Errorf("an ASN database as country file: err = %v, want one naming the file and the missing fields", err)
	}
	notMMDB := writeFile(t, dir, "x.mmdb", "not an mmdb")
	if _, err := loadCountry(notMMDB); err == nil || !strings.Contains(err.Error(), "x.mmdb is not a readable MMDB file") {
		t.Errorf("garbage as country file: err = %v", err)
	}
	country := writeMMDB(t, dir, "c.mmdb", "GeoLite2-Country", []mmdbEntry{{"8.8.8.0/24", maxmindCountry("US")}})
	if _, err := loadASNMMDB(country); err == nil || !strings.Contains(err.Error(), "neither autonomous_system_number nor asn") {
		t.Errorf("a country database as ASN file: err = %v", err)
	}
}

type asnWant struct {
	a    netip.Addr
	asn  uint32
	name string
	ok   bool
}

func checkASN(t *testing.T, s *Set, wants []asnWant) {
	t.Helper()
	for _, w := range wants {
		asn, name, ok := s.ASN(w.a)
		if asn != w.asn || name != w.name || ok != w.ok {
			t.Errorf("ASN(%v) = %d %q %v, want %d %q %v", w.a, asn, name, ok, w.asn, w.name, w.ok)
		}
	}
}

func TestASNMMDBLayouts(t *testing.T) {
	dir := t.TempDir()
	geolite := writeMMDB(t, dir, "GeoLite2-ASN.mmdb", "GeoLite2-ASN", []mmdbEntry{
		{"8.8.8.0/24", maxmindASN(15169, "Google LLC")},
		{"2001:4860::/32", maxmindASN(15169, "Google LLC")},
		{"1.1.1.0/24", maxmindASN(13335, "Cloudflare, Inc.")},
	})
	ipinfo := writeMMDB(t, dir, "ipinfo_lite.mmdb", "ipinfo lite.mmdb", []mmdbEntry{
		{"8.8.8.0/24", ipinfoLite("US", "AS15169", "Google LLC")},
		{"2001:4860::/32", ipinfoLite("US", "AS15169", "Google LLC")},
		{"1.1.1.0/24", ipinfoLite("AU", "AS13335", "Cloudflare, Inc.")},
		{"5.5.5.0/24", ipinfoLite("DE", "", "")}, // a country, no AS: a miss
	})
	wants := []asnWant{
		{netip.MustParseAddr("8.8.8.8"), 15169, "Google LLC", true},
		{netip.MustParseAddr("::ffff:8.8.8.8"), 15169, "Google LLC", true},
		{netip.MustParseAddr("2001:4860:4860::8888"), 15169, "Google LLC", true},
		{netip.MustParseAddr("1.1.1.1"), 13335, "Cloudflare, Inc.", true},
		{netip.MustParseAddr("5.5.5.5"), 0, "", false},
		{nowhere, 0, "", false},
		{nowhere6, 0, "", false},
		{netip.Addr{}, 0, "", false},
	}
	for _, c := range []struct{ path, layout string }{{geolite, layoutMaxMindASN}, {ipinfo, layoutIPinfoASN}} {
		t.Run(c.layout, func(t *testing.T) {
			db, err := loadASNMMDB(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if db.layout != c.layout {
				t.Errorf("layout %q, want %q", db.layout, c.layout)
			}
			checkASN(t, &Set{asn: []asnSource{db}}, wants)
		})
	}
}

const asnCSV = `1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
1.1.1.0,1.1.1.255,13335,"Cloudflare, Inc."
8.8.8.0,8.8.8.255,15169,Google LLC
8.8.9.0,8.8.9.0,64500,"Single ""quoted"" address"
10.0.0.0,10.5.255.255,64501,Six /16s
2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC
2606:4700::,2606:4700:ffff:ffff:ffff:ffff:ffff:ffff,13335,"Cloudflare, Inc."
`

func TestASNCSV(t *testing.T) {
	dir := t.TempDir()
	one := writeFile(t, dir, "asn.csv", asnCSV)
	r, _, err := loadASNCSV([]string{one})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.first4) != 5 || len(r.first6) != 2 {
		t.Fatalf("%d IPv4 and %d IPv6 ranges, want 5 and 2", len(r.first4), len(r.first6))
	}
	checkASN(t, &Set{asn: []asnSource{r}}, []asnWant{
		{netip.MustParseAddr("1.0.0.0"), 13335, "Cloudflare, Inc.", true},
		{netip.MustParseAddr("1.0.0.255"), 13335, "Cloudflare, Inc.", true},
		{netip.MustParseAddr("1.0.1.0"), 0, "", false}, // between ranges
		{netip.MustParseAddr("0.255.255.255"), 0, "", false},
		{netip.MustParseAddr("1.1.1.1"), 13335, "Cloudflare, Inc.", true},
		{netip.MustParseAddr("::ffff:8.8.8.8"), 15169, "Google LLC", true},
		{netip.MustParseAddr("8.8.9.0"), 64500, `Single "quoted" address`, true},
		{netip.MustParseAddr("8.8.9.1"), 0, "", false},             // past a range
		{netip.MustParseAddr("10.3.1.1"), 64501, "Six /16s", true}, // in a /16 where no range starts
		{netip.MustParseAddr("10.5.255.255"), 64501, "Six /16s", true},
		{netip.MustParseAddr("10.6.0.0"), 0, "", false}, // past the last range
		{netip.MustParseAddr("255.255.255.255"), 0, "", false},
		{netip.MustParseAddr("2001:4860:4860::8888"), 15169, "Google LLC", true},
		{netip.MustParseAddr("2606:4700::1111"), 13335, "Cloudflare, Inc.", true},
		{netip.MustParseAddr("2606:4701::"), 0, "", false},
		{nowhere6, 0, "", false},
		{netip.Addr{}, 0, "", false},
	})

	// Two files (the package's IPv4 and IPv6 files) merge into one table.
	v4 := writeFile(t, dir, "asn-ipv4.csv", "8.8.8.0,8.8.8.255,15169,Google LLC\n")
	v6 := writeFile(t, dir, "asn-ipv6.csv", "2606:4700::,2606:4700:ffff:ffff:ffff:ffff:ffff:ffff,13335,\"Cloudflare, Inc.\"\n")
	r, _, err = loadASNCSV([]string{v4, v6})
	if err != nil {
		t.Fatal(err)
	}
	checkASN(t, &Set{asn: []asnSource{r}}, []asnWant{
		{netip.MustParseAddr("8.8.8.8"), 15169, "Google LLC", true},
		{netip.MustParseAddr("2606:4700::1"), 13335, "Cloudflare, Inc.", true},
	})
}

func TestASNCSVErrors(t *testing.T) {
	cases := []struct{ name, csv, want string }{
		{"inverted", "8.8.8.0,8.8.8.255,1,a\n8.8.9.255,8.8.9.0,2,b\n", "bad.csv:2: range 8.8.9.255-8.8.9.0 is inverted"},
		{"bad address", "8.8.8.0,8.8.8.256,1,a\n", "bad.csv:1: bad address"},
		{"mixed families", "8.8.8.0,2001:db8::,1,a\n", "bad.csv:1: 8.8.8.0 and 2001:db8:: must be plain addresses of one family"},
		{"bad AS number", "8.8.8.0,8.8.8.255,AS-x,a\n", `bad.csv:1: AS number "AS-x" is not a 32-bit number`},
		{"AS number too large", "8.8.8.0,8.8.8.255,4294967296,a\n", `bad.csv:1: AS number "4294967296"`},
		{"three fields", "8.8.8.0,8.8.8.255,1,a\n1.1.1.0,1.1.1.255,2\n", "bad.csv:2: not a first_ip,last_ip,asn,name row"},
		{"bad quoting", "8.8.8.0,8.8.8.255,1,\"a\n", "bad.csv:1: not a first_ip,last_ip,asn,name row"},
		{"range inside another", "8.8.8.0,8.8.8.255,1,a\n8.8.8.128,8.8.8.200,2,b\n", "bad.csv:2: range 8.8.8.128-8.8.8.200 overlaps 8.8.8.0-8.8.8.255 of"},
		{"same first address", "8.8.8.0,8.8.8.255,1,a\n8.8.8.0,8.8.9.255,2,b\n", "range 8.8.8.0-8.8.9.255 overlaps 8.8.8.0-8.8.8.255 of"},
		{"same range twice", "8.8.8.0,8.8.8.255,1,a\n8.8.8.0,8.8.8.255,1,a\n", "bad.csv:2: range 8.8.8.0-8.8.8.255 overlaps 8.8.8.0-8.8.8.255 of"},
		{"v6 range inside another", "2001:db8::,2001:db8::ff,1,a\n2001:db8::ff,2001:db8::ff,2,b\n", "bad.csv:2: range 2001:db8::ff-2001:db8::ff overlaps"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "bad.csv", c.csv)
			_, _, err := loadASNCSV([]string{path})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	// Overlap across two files names both.
	dir := t.TempDir()
	a := writeFile(t, dir, "a.csv", "8.8.8.0,8.8.8.255,1,a\n")
	b := writeFile(t, dir, "b.csv", "1.1.1.0,1.1.1.255,3,c\n8.8.8.8,8.8.8.8,2,b\n")
	_, _, err := loadASNCSV([]string{a, b})
	if want := "b.csv:2: range 8.8.8.8-8.8.8.8 overlaps 8.8.8.0-8.8.8.255 of " + a + ":1"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want one containing %q", err, want)
	}
	// A header row is allowed.
	h := writeFile(t, dir, "h.csv", "first_ip,last_ip,asn,name\n8.8.8.0,8.8.8.255,15169,Google LLC\n")
	if r, _, err := loadASNCSV([]string{h}); err != nil || len(r.first4) != 1 {
		t.Errorf("CSV with a header: %v", err)
	}
}

// A range starting inside the previous one and ending after it takes over
// from its start (the real asn-ipv4.csv has such a pair).
func TestASNCSVPartialOverlap(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "asn.csv", "8.8.8.0,8.8.8.255,1,a\n8.8.8.128,8.8.9.0,2,b\n2001:db8::,2001:db8::ff,3,c\n2001:db8::80,2001:db8::1ff,4,d\n")
	r, clipped, err := loadASNCSV([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + ":1: range 8.8.8.0-8.8.8.255 (AS1) cut short at 8.8.8.127, where " + path + ":2 (8.8.8.128-8.8.9.0, AS2) starts",
		path + ":3: range 2001:db8::-2001:db8::ff (AS3) cut short at 2001:db8::7f, where " + path + ":4 (2001:db8::80-2001:db8::1ff, AS4) starts",
	}
	if !slices.Equal(clipped, want) {
		t.Errorf("clipped = %q, want %q", clipped, want)
	}
	checkASN(t, &Set{asn: []asnSource{r}}, []asnWant{
		{netip.MustParseAddr("8.8.8.0"), 1, "a", true},
		{netip.MustParseAddr("8.8.8.127"), 1, "a", true},
		{netip.MustParseAddr("8.8.8.128"), 2, "b", true},
		{netip.MustParseAddr("8.8.9.0"), 2, "b", true},
		{netip.MustParseAddr("8.8.9.1"), 0, "", false},
		{netip.MustParseAddr("2001:db8::7f"), 3, "c", true},
		{netip.MustParseAddr("2001:db8::80"), 4, "d", true},
		{netip.MustParseAddr("2001:db8::1ff"), 4, "d", true},
	})
}

// Several ASN files: earlier ones win, CSVs merge at the first CSV's place.
func TestASNFileOrder(t *testing.T) {
	dir := t.TempDir()
	mmdb := writeMMDB(t, dir, "asn.mmdb", "GeoLite2-ASN", []mmdbEntry{
		{"8.8.8.0/24", maxmindASN(64501, "from the mmdb")},
		{"9.9.9.0/24", maxmindASN(19281, "Quad9")},
	})
	csv := writeFile(t, dir, "asn.csv", "8.8.8.0,8.8.8.255,15169,Google LLC\n1.1.1.0,1.1.1.255,13335,Cloudflare\n")
	// An MMDB not named .mmdb is still read as one.
	data, err := os.ReadFile(mmdb)
	if err != nil {
		t.Fatal(err)
	}
	mmdb = writeFile(t, dir, "GeoLite2-ASN.db", string(data))
	if !isMMDB(mmdb) || isMMDB(csv) {
		t.Fatalf("isMMDB(%s) = %v, isMMDB(%s) = %v", mmdb, isMMDB(mmdb), csv, isMMDB(csv))
	}
	for _, c := range []struct {
		files  []string
		google asnWant
	}{
		{[]string{mmdb, csv}, asnWant{netip.MustParseAddr("8.8.8.8"), 64501, "from the mmdb", true}},
		{[]string{csv, mmdb}, asnWant{netip.MustParseAddr("8.8.8.8"), 15169, "Google LLC", true}},
	} {
		cfg := DefaultConfig()
		cfg.ASNFiles = c.files
		l, err := NewLoader(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkASN(t, l.Current(), []asnWant{c.google,
			{netip.MustParseAddr("9.9.9.9"), 19281, "Quad9", true},
			{netip.MustParseAddr("1.1.1.1"), 13335, "Cloudflare", true},
			{netip.MustParseAddr("7.7.7.7"), 0, "", false}})
	}
}

const networksYAML = `networks:
  192.0.2.0/24: {name: customer-a, role: customer, site: par1, region: eu, tenant: acme}
  192.0.2.128/25: {name: customer-a-dmz, role: dmz}
  10.0.0.0/8: {name: internal, role: infra, site: any}
  2001:db8:1::/48: {name: customer-b, role: customer}
  2001:db8::/32: {name: docs, role: lab, region: us, tenant: ietf}
`

func TestNetworks(t *testing.T) {
	path := writeFile(t, t.TempDir(), "networks.yml", networksYAML)
	tbl, err := loadNetworks(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Set{networks: tbl}
	custA := Network{Name: "customer-a", Role: "customer", Site: "par1", Region: "eu", Tenant: "acme"}
	for _, q := range []struct {
		a    string
		want Network
		ok   bool
	}{
		{"192.0.2.1", custA, true},
		{"::ffff:192.0.2.1", custA, true},
		{"192.0.2.127", custA, true},
		{"192.0.2.128", Network{Name: "customer-a-dmz", Role: "dmz"}, true}, // more specific wins
		{"192.0.2.255", Network{Name: "customer-a-dmz", Role: "dmz"}, true},
		{"10.200.0.1", Network{Name: "internal", Role: "infra", Site: "any"}, true},
		{"2001:db8:1:2::3", Network{Name: "customer-b", Role: "customer"}, true},
		{"2001:db8:2::1", Network{Name: "docs", Role: "lab", Region: "us", Tenant: "ietf"}, true},
		{"192.0.3.1", Network{}, false},
		{"2001:db9::1", Network{}, false},
	} {
		got, ok := s.Network(netip.MustParseAddr(q.a))
		if got != q.want || ok != q.ok {
			t.Errorf("Network(%s) = %+v %v, want %+v %v", q.a, got, ok, q.want, q.ok)
		}
	}
	if _, ok := s.Network(netip.Addr{}); ok {
		t.Error("the zero address matched a network")
	}
}

func TestNetworksErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"bad prefix", "networks:\n  192.0.2.0/33: {name: x}\n", `networks.yml:2: networks key "192.0.2.0/33" is not a prefix`},
		{"address, no length", "networks:\n  192.0.2.0: {name: x}\n", `networks key "192.0.2.0" is not a prefix`},
		{"host bits", "networks:\n  192.0.2.1/24: {name: x}\n", `networks key "192.0.2.1/24" has host bits set; write 192.0.2.0/24`},
		{"unknown field", "networks:\n  192.0.2.0/24: {name: x, owner: y}\n", "owner"},
		{"unknown top key", "network:\n  192.0.2.0/24: {name: x}\n", `networks.yml:1: unknown key "network"; the file holds only "networks"`},
		{"same prefix twice", "networks:\n  2001:db8::/32: {name: x}\n  2001:DB8::/32: {name: y}\n", `networks.yml:3: networks key "2001:DB8::/32" is the same prefix as "2001:db8::/32"`},
		{"same key twice", "networks:\n  192.0.2.0/24: {name: x}\n  192.0.2.0/24: {name: y}\n", `networks.yml:3: networks key "192.0.2.0/24" is the same prefix`},
		{"not a mapping", "networks:\n  - 192.0.2.0/24\n", `networks.yml:2: "networks" must be a mapping`},
		{"mapped", "networks:\n  ::ffff:192.0.2.0/120: {name: x}\n", "IPv4-mapped"},
		{"not yaml", "networks: [\n", "networks.yml"},
		{"name over the stores' bound", "networks:\n  192.0.2.0/24: {name: " + strings.Repeat("n", pb.MaxNameBytes+1) + "}\n", "201 bytes, at most 200 are stored"},
		{"site over the stores' bound", "networks:\n  192.0.2.0/24: {name: x, site: " + strings.Repeat("s", pb.MaxNameBytes+1) + "}\n", "201 bytes, at most 200 are stored"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "networks.yml", c.yaml)
			_, err := loadNetworks(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "networks.yml") {
				t.Errorf("err = %v, want one naming the file and containing %q", err, c.want)
			}
		})
	}
}

const exportersYAML = `exporters:
  192.0.2.1:
    name: edge1.par1
    sampling_rate: 1000
    default_boundary: internal
    interfaces:
      10: {name: et-0/0/1, description: "Transit: Cogent", speed: 100000000000, boundary: external}
      11: {name: et-0/0/2, description: "Core", speed: 400000000000}
  2001:db8::1:
    name: edge2.fra1
    interfaces:
      1: {name: xe-1/0/0}
`

func TestExporters(t *testing.T) {
	path := writeFile(t, t.TempDir(), "exporters.yml", exportersYAML)
	m, err := loadExporters(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &Set{exporters: m}
	e, ok := s.Exporter(netip.MustParseAddr("::ffff:192.0.2.1"))
	if !ok {
		t.Fatal("exporter 192.0.2.1 (IPv4-mapped) not found")
	}
	if e.Name != "edge1.par1" || e.SamplingRate != 1000 || e.DefaultBoundary != BoundaryInternal || len(e.Interfaces) != 2 {
		t.Errorf("exporter = %+v", e)
	}
	if got, want := e.Interfaces[10], (Interface{"et-0/0/1", "Transit: Cogent", 100_000_000_000, BoundaryExternal}); got != want {
		t.Errorf("interface 10 = %+v, want %+v", got, want)
	}
	if got, want := e.Interfaces[11], (Interface{"et-0/0/2", "Core", 400_000_000_000, BoundaryInternal}); got != want {
		t.Errorf("interface 11 (default boundary) = %+v, want %+v", got, want)
	}
	e2, ok := s.Exporter(netip.MustParseAddr("2001:db8::1"))
	if !ok || e2.Name != "edge2.fra1" || e2.SamplingRate != 0 || e2.Interfaces[1] != (Interface{Name: "xe-1/0/0"}) {
		t.Errorf("exporter 2001:db8::1 = %+v %v", e2, ok)
	}
	if _, ok := s.Exporter(netip.MustParseAddr("192.0.2.2")); ok {
		t.Error("unknown exporter found")
	}
}

func TestExportersErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"bad address", "exporters:\n  edge1: {name: x}\n", `exporters key "edge1" is not an IP address`},
		{"prefix as address", "exporters:\n  192.0.2.0/24: {name: x}\n", `exporters key "192.0.2.0/24" is not an IP address`},
		{"bad default boundary", "exporters:\n  192.0.2.1: {default_boundary: outside}\n", `exporter 192.0.2.1: default_boundary "outside" is neither external nor internal`},
		{"bad boundary", "exporters:\n  192.0.2.1:\n    interfaces:\n      3: {boundary: transit}\n", `exporter 192.0.2.1 interface 3: boundary "transit"`},
		{"unknown field", "exporters:\n  192.0.2.1: {name: x, samplingrate: 10}\n", "samplingrate"},
		{"bad ifIndex", "exporters:\n  192.0.2.1:\n    interfaces:\n      et-0: {name: x}\n", "et-0"},
		{"negative speed", "exporters:\n  192.0.2.1:\n    interfaces:\n      1: {speed: -1}\n", "-1"},
		{"sampling rate too large", "exporters:\n  192.0.2.1: {sampling_rate: 4294967296}\n", "sampling_rate 4294967296 is above 2^32-1"},
		{"same exporter twice", "exporters:\n  192.0.2.1: {name: x}\n  ::ffff:192.0.2.1: {name: y}\n", "names an exporter already listed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "exporters.yml", c.yaml)
			_, err := loadExporters(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "exporters.yml") {
				t.Errorf("err = %v, want one naming the file and containing %q", err, c.want)
			}
		})
	}
}

func TestNilSet(t *testing.T) {
	var s *Set
	a := netip.MustParseAddr("8.8.8.8")
	if s.Country(a) != "" {
		t.Error("nil Set has a country")
	}
	if _, _, ok := s.ASN(a); ok {
		t.Error("nil Set has an ASN")
	}
	if _, ok := s.Network(a); ok {
		t.Error("nil Set has a network")
	}
	if _, ok := s.Exporter(a); ok {
		t.Error("nil Set has an exporter")
	}
	empty := &Set{}
	if empty.Country(a) != "" {
		t.Error("empty Set has a country")
	}
	if _, _, ok := empty.ASN(a); ok {
		t.Error("empty Set has an ASN")
	}
	if _, ok := empty.Network(a); ok {
		t.Error("empty Set has a network")
	}
	if _, ok := empty.Exporter(a); ok {
		t.Error("empty Set has an exporter")
	}
}

// TestLongASNamesClipped: a third-party AS name longer than the stores keep
// is cut at a UTF-8 boundary when the CSV loads, rather than making every
// flow of that AS fail downstream.
func TestLongASNamesClipped(t *testing.T) {
	long := strings.Repeat("é", pb.MaxNameBytes) // 2 bytes each
	path := writeFile(t, t.TempDir(), "asn.csv", "192.0.2.0,192.0.2.255,64500,"+long+"\n")
	r, _, err := loadASNCSV([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	_, name, ok := (&Set{asn: []asnSource{r}}).ASN(netip.MustParseAddr("192.0.2.7"))
	if !ok || name != strings.Repeat("é", pb.MaxNameBytes/2) {
		t.Fatalf("name = %d bytes %q, want %d runes of é", len(name), name, pb.MaxNameBytes/2)
	}
}
