// Package geotest writes small enricher data files (a country MMDB, an
// ASN range CSV, networks and exporters YAML) that cover the addresses and
// exporters of the mocker and of flowtest, with hits and misses of every
// source, so tests and benchmarks need no download.
package geotest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
)

// Countries: 203.0.113.0/24, 10.16.0.0/12 and up, and 2001:db8:8000::/33
// are missing on purpose.
var countries = []struct{ network, code string }{
	{"192.0.2.0/24", "FR"},
	{"198.51.100.0/24", "DE"},
	{"10.0.0.0/12", "US"},
	{"2001:db8::/33", "JP"},
}

// ASNCSV holds both families, a name with a comma (quoted) and AS numbers
// that agree (192.0.2/24, 198.51.100/24) or not (10.0/13) with the mocker's.
const ASNCSV = `192.0.2.0,192.0.2.255,64496,Doc Net A
198.51.100.0,198.51.100.255,64497,"Doc Net B, Inc."
10.0.0.0,10.7.255.255,65001,Private Low
2001:db8::,2001:db8:7fff:ffff:ffff:ffff:ffff:ffff,64510,Doc Six
`

// NetworksYAML nests prefixes so the most specific must win.
const NetworksYAML = `networks:
  192.0.2.0/24: {name: doc-a, role: customer, site: par1, region: eu, tenant: acme}
  10.0.0.0/8: {name: private, role: internal, site: fra1}
  10.4.0.0/16: {name: lab, role: lab, site: ams1}
  2001:db8::/32: {name: v6-doc, role: customer}
  2001:db8:1::/48: {name: v6-cust-b, role: customer, site: lon1}
`

// ExportersYAML lists three of the four exporters (192.0.2.250-253): one
// with a sampling rate, interfaces and a default boundary, one without a
// sampling rate, one without interfaces; 192.0.2.253 is unknown.
const ExportersYAML = `exporters:
  192.0.2.250:
    name: edge1.par1
    sampling_rate: 2000
    default_boundary: internal
    interfaces:
      1: {name: et-0/0/1, description: "Transit: Cogent", speed: 100000000000, boundary: external}
      2: {name: et-0/0/2, description: Core, speed: 400000000000}
      3: {name: et-0/0/3, description: "Peering: IX", speed: 10000000000, boundary: external}
  192.0.2.251:
    name: edge2.lon1
    default_boundary: external
    interfaces:
      1: {name: xe-1/0/1, speed: 10000000000}
      2: {name: xe-1/0/2, description: "Customer: B", boundary: internal}
  192.0.2.252:
    name: core1.fra1
    sampling_rate: 512
`

// Write writes the four files to dir and returns the sources.Config
// naming them.
func Write(t testing.TB, dir string) sources.Config {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range countries {
		_, n, err := net.ParseCIDR(c.network)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(c.code)}}
		if err := tree.Insert(n, rec); err != nil {
			t.Fatal(err)
		}
	}
	cfg := sources.DefaultConfig()
	cfg.CountryFile = filepath.Join(dir, "country.mmdb")
	f, err := os.Create(cfg.CountryFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg.ASNFiles = []string{write("asn-ipv4.csv", ASNCSV)}
	cfg.NetworksFile = write("networks.yml", NetworksYAML)
	cfg.ExportersFile = write("exporters.yml", ExportersYAML)
	return cfg
}
