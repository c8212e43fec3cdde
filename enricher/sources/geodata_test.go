package sources

import (
	"encoding/csv"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// geodataDir is where `make geodata` puts the ip-location-db packages.
func geodataDir() string {
	if d := os.Getenv("FLOWPIPELINE_GEODATA"); d != "" {
		return d
	}
	return filepath.Join("..", "..", ".cache", "geodata")
}

type realFiles struct{ country, asn4, asn6 string }

// realGeodata returns the real files, or skips loudly (fails in CI) when
// `make geodata` has not fetched them.
func realGeodata(t testing.TB) realFiles {
	t.Helper()
	d := geodataDir()
	f := realFiles{
		country: filepath.Join(d, "geo-whois-asn-country-mmdb", "geo-whois-asn-country.mmdb"),
		asn4:    filepath.Join(d, "asn", "asn-ipv4.csv"),
		asn6:    filepath.Join(d, "asn", "asn-ipv6.csv"),
	}
	for _, p := range []string{f.country, f.asn4, f.asn6} {
		if _, err := os.Stat(p); err != nil {
			testenv.Unavailable(t, "the ip-location-db data is not fetched (%v); run `make geodata`", err)
		}
	}
	return f
}

// csvRow is one row of the ASN CSV as the file says it, read here with
// nothing of the code under test.
type csvRow struct {
	first, last netip.Addr
	asn         uint32
	name        string
}

func readRows(t *testing.T, path string) []csvRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	var rows []csvRow
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return rows
		}
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(rec[2], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, csvRow{netip.MustParseAddr(rec[0]), netip.MustParseAddr(rec[1]), uint32(n), rec[3]})
	}
}

func rowOf(rows []csvRow, a netip.Addr) (csvRow, bool) {
	for _, r := range rows {
		if r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0 {
			return r, true
		}
	}
	return csvRow{}, false
}

// TestRealGeodata loads the real ip-location-db packages and checks
// well-known addresses against what the files themselves say.
func TestRealGeodata(t *testing.T) {
	files := realGeodata(t)
	cfg := DefaultConfig()
	cfg.CountryFile = files.country
	cfg.ASNFiles = []string{files.asn4, files.asn6}
	start := time.Now()
	l, err := NewLoader(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded the country MMDB and both ASN CSVs in %s", time.Since(start).Round(time.Millisecond))
	s := l.Current()
	if s.country.layout != layoutFlatCountry {
		t.Errorf("country layout %q, want %q (database_type %q)", s.country.layout, layoutFlatCountry, s.country.r.Metadata.DatabaseType)
	}

	rows4, rows6 := readRows(t, files.asn4), readRows(t, files.asn6)
	rows := append(append([]csvRow{}, rows4...), rows6...)
	ranges := s.asn[0].(*asnRanges)
	if len(ranges.first4) != len(rows4) || len(ranges.first6) != len(rows6) {
		t.Errorf("loaded %d IPv4 and %d IPv6 ranges, the files have %d and %d rows", len(ranges.first4), len(ranges.first6), len(rows4), len(rows6))
	}

	// The anchors: what everyone knows about these addresses, and what the
	// files say about them.
	for _, c := range []struct {
		addr, country string
		asn           uint32
		name          string // "" = as the CSV says
	}{
		{"8.8.8.8", "US", 15169, "Google LLC"},
		{"::ffff:8.8.8.8", "US", 15169, "Google LLC"},
		{"2001:4860:4860::8888", "US", 15169, "Google LLC"},
		{"1.1.1.1", "", 13335, ""},
	} {
		a := netip.MustParseAddr(c.addr)
		row, ok := rowOf(rows, a.Unmap())
		if !ok {
			t.Errorf("no CSV row holds %s", c.addr)
			continue
		}
		want := c.name
		if want == "" {
			want = row.name
		}
		if row.asn != c.asn || row.name != want {
			t.Errorf("the CSV says %s is AS%d %q, the anchor AS%d %q", c.addr, row.asn, row.name, c.asn, want)
		}
		asn, name, ok := s.ASN(a)
		if !ok || asn != row.asn || name != row.name {
			t.Errorf("ASN(%s) = %d %q %v, the CSV says %d %q", c.addr, asn, name, ok, row.asn, row.name)
		}
		if c.country != "" {
			if got := s.Country(a); got != c.country {
				t.Errorf("Country(%s) = %q, want %q", c.addr, got, c.country)
			}
		}
	}
	if _, name, _ := s.ASN(netip.MustParseAddr("1.1.1.1")); name != "Cloudflare, Inc." {
		t.Errorf("1.1.1.1's AS name is %q, want the CSV's quoted \"Cloudflare, Inc.\"", name)
	}

	// Every 97th row and the overlapping pairs: its first and last address
	// give that row (a range that the next one overlaps ends where the next
	// one starts, see loadASNCSV).
	checked := 0
	for i := 0; i < len(rows); i++ {
		r := rows[i]
		overlapped := i+1 < len(rows) && rows[i+1].first.Is4() == r.first.Is4() && rows[i+1].first.Compare(r.last) <= 0
		if i%97 != 0 && !overlapped {
			continue
		}
		if overlapped {
			r.last = rows[i+1].first.Prev()
			t.Logf("row %d (%s-%s) overlaps the next one, %s-%s", i+1, rows[i].first, rows[i].last, rows[i+1].first, rows[i+1].last)
		}
		for _, a := range []netip.Addr{r.first, r.last} {
			asn, name, ok := s.ASN(a)
			if !ok || asn != r.asn || name != r.name {
				t.Fatalf("ASN(%s) = %d %q %v, row %d says %d %q", a, asn, name, ok, i, r.asn, r.name)
			}
		}
		checked++
	}
	t.Logf("checked %d sampled rows of %d", checked, len(rows))

	// The country of every 50th network, as the MMDB itself decodes it.
	n := 0
	for res := range s.country.r.Networks() {
		if n++; n%50 != 0 {
			continue
		}
		var rec flatCountryRecord
		if err := res.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		p := res.Prefix()
		if got := s.Country(p.Addr()); got != rec.CountryCode {
			t.Fatalf("Country(%s) = %q, the MMDB says %q for %s", p.Addr(), got, rec.CountryCode, p)
		}
	}
	if n < 100000 {
		t.Errorf("the country MMDB has only %d networks", n)
	}
}
