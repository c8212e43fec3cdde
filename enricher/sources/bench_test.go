package sources

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// benchAddrs returns n random public-looking IPv4 addresses (a fixed seed,
// so runs compare), spread over the whole space so that the lookups miss
// the CPU caches as real traffic does.
func benchAddrs(n int) []netip.Addr {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]netip.Addr, n)
	for i := range out {
		var b [4]byte
		b[0] = byte(1 + rng.IntN(223))
		b[1], b[2], b[3] = byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())
		out[i] = netip.AddrFrom4(b)
	}
	return out
}

// syntheticASNCSV writes n IPv4 ranges of random sizes, without gaps,
// covering the space like the real file (about 412k rows).
func syntheticASNCSV(b *testing.B, dir string, n int) string {
	path := filepath.Join(dir, "asn-synthetic.csv")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	rng := rand.New(rand.NewPCG(3, 4))
	step := uint32((0xE0000000 - 1<<24) / uint64(n))
	var first uint32 = 1 << 24
	for i := 0; i < n && first < 0xE0000000; i++ {
		size := 1 + rng.Uint32N(step)
		last := first + size - 1
		fmt.Fprintf(w, "%s,%s,%d,\"Org %d, Inc.\"\n", u32addr(first), u32addr(last), 64512+i%1000, i%50000)
		first = last + 1 + rng.Uint32N(step)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return path
}

func u32addr(x uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
}

// BenchmarkLookup measures one lookup per op, per source, on one core.
func BenchmarkLookup(b *testing.B) {
	addrs := benchAddrs(1 << 16)
	const mask = 1<<16 - 1
	dir := b.TempDir()

	run := func(b *testing.B, lookup func(a netip.Addr) bool) {
		hits := 0
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if lookup(addrs[i&mask]) {
				hits++
			}
		}
		b.ReportMetric(float64(hits)/float64(b.N)*100, "%hit")
	}

	// Synthetic sources of realistic size.
	b.Run("asn-csv-400k", func(b *testing.B) {
		r, _, err := loadASNCSV([]string{syntheticASNCSV(b, dir, 400_000)})
		if err != nil {
			b.Fatal(err)
		}
		if len(r.first4) < 390_000 {
			b.Fatalf("only %d ranges", len(r.first4))
		}
		s := &Set{asn: []asnSource{r}}
		run(b, func(a netip.Addr) bool { _, _, ok := s.ASN(a); return ok })
	})
	b.Run("networks-100k", func(b *testing.B) {
		var sb strings.Builder
		sb.WriteString("networks:\n")
		rng := rand.New(rand.NewPCG(5, 6))
		seen := map[netip.Prefix]bool{}
		for len(seen) < 100_000 {
			p := netip.PrefixFrom(u32addr(rng.Uint32()&0xDFFFFFFF|0x01000000), 12+rng.IntN(17)).Masked()
			if seen[p] {
				continue
			}
			seen[p] = true
			fmt.Fprintf(&sb, "  %s: {name: net-%d, role: customer, site: s%d, region: eu, tenant: t%d}\n", p, len(seen), len(seen)%40, len(seen)%300)
		}
		tbl, err := loadNetworks(writeFile(b, dir, "networks.yml", sb.String()))
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{networks: tbl}
		run(b, func(a netip.Addr) bool { _, ok := s.Network(a); return ok })
	})
	b.Run("country-mmdb-synthetic", func(b *testing.B) {
		var entries []mmdbEntry
		codes := []string{"US", "DE", "FR", "GB", "JP", "BR", "IN", "CN", "AU", "NL"}
		for i := range 222 * 256 { // /16s over 1.0.0.0-223.255.255.255
			entries = append(entries, mmdbEntry{fmt.Sprintf("%s/16", u32addr(uint32(0x01000000)+uint32(i)<<16)), flatCountry(codes[i%len(codes)])})
		}
		db, err := loadCountry(writeMMDB(b, dir, "country.mmdb", "country ipvAll", entries))
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{country: db}
		run(b, func(a netip.Addr) bool { return s.Country(a) != "" })
	})
	b.Run("asn-mmdb-synthetic", func(b *testing.B) {
		var entries []mmdbEntry
		for i := range 222 * 256 {
			entries = append(entries, mmdbEntry{fmt.Sprintf("%s/16", u32addr(uint32(0x01000000)+uint32(i)<<16)),
				mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(uint32(64512 + i%1000)), "autonomous_system_organization": mmdbtype.String(fmt.Sprintf("Org %d", i%1000))}})
		}
		db, err := loadASNMMDB(writeMMDB(b, dir, "asn.mmdb", "GeoLite2-ASN", entries))
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{asn: []asnSource{db}}
		run(b, func(a netip.Addr) bool { _, _, ok := s.ASN(a); return ok })
	})
	b.Run("exporters-200", func(b *testing.B) {
		var sb strings.Builder
		sb.WriteString("exporters:\n")
		for i := range 200 {
			fmt.Fprintf(&sb, "  10.0.%d.%d:\n    name: r%d\n    sampling_rate: 1000\n    interfaces:\n", i/250, i%250+1, i)
			for j := range 48 {
				fmt.Fprintf(&sb, "      %d: {name: et-0/0/%d, speed: 100000000000, boundary: external}\n", j+1, j)
			}
		}
		m, err := loadExporters(writeFile(b, dir, "exporters.yml", sb.String()))
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{exporters: m}
		exp := make([]netip.Addr, 0, 256)
		for i := range 256 { // 200 known, 56 unknown
			exp = append(exp, netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}))
		}
		hits := 0
		for i := 0; b.Loop(); i++ {
			if e, ok := s.Exporter(exp[i&255]); ok {
				if _, ok := e.Interfaces[uint32(i%48+1)]; ok {
					hits++
				}
			}
		}
		b.ReportMetric(float64(hits)/float64(b.N)*100, "%hit")
	})

	// The real ip-location-db files (make geodata).
	b.Run("country-mmdb-real", func(b *testing.B) {
		files := realGeodata(b)
		db, err := loadCountry(files.country)
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{country: db}
		run(b, func(a netip.Addr) bool { return s.Country(a) != "" })
	})
	b.Run("asn-csv-real", func(b *testing.B) {
		files := realGeodata(b)
		r, _, err := loadASNCSV([]string{files.asn4, files.asn6})
		if err != nil {
			b.Fatal(err)
		}
		s := &Set{asn: []asnSource{r}}
		run(b, func(a netip.Addr) bool { _, _, ok := s.ASN(a); return ok })
	})
}
