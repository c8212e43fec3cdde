package sources

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// mmdbEntry is one network of a test MMDB and its record.
type mmdbEntry struct {
	network string
	record  mmdbtype.Map
}

// writeMMDB builds a small MMDB with the given database_type.
func writeMMDB(t testing.TB, dir, name, dbType string, entries []mmdbEntry) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		_, n, err := net.ParseCIDR(e.network)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, e.record); err != nil {
			t.Fatalf("inserting %s: %v", e.network, err)
		}
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The record shapes of each layout, with the neighbouring fields the real
// databases carry so that decoding must skip them.
func maxmindCountry(code string) mmdbtype.Map {
	return mmdbtype.Map{
		"continent": mmdbtype.Map{"code": mmdbtype.String("EU"), "geoname_id": mmdbtype.Uint32(6255148)},
		"country": mmdbtype.Map{"geoname_id": mmdbtype.Uint32(2635167), "iso_code": mmdbtype.String(code),
			"names": mmdbtype.Map{"en": mmdbtype.String("name of " + code)}},
		"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String("ZZ")},
	}
}

func maxmindCity(code, city string) mmdbtype.Map {
	m := maxmindCountry(code)
	m["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(city)}}
	m["location"] = mmdbtype.Map{"latitude": mmdbtype.Float64(51.5), "longitude": mmdbtype.Float64(-0.1)}
	return m
}

func ipinfoLite(code, asn, asName string) mmdbtype.Map {
	m := mmdbtype.Map{"country_code": mmdbtype.String(code), "country": mmdbtype.String("name of " + code),
		"continent_code": mmdbtype.String("EU"), "continent": mmdbtype.String("Europe")}
	if asn != "" {
		m["asn"] = mmdbtype.String(asn)
		m["as_name"] = mmdbtype.String(asName)
		m["as_domain"] = mmdbtype.String("example.com")
	}
	return m
}

func flatCountry(code string) mmdbtype.Map {
	return mmdbtype.Map{"country_code": mmdbtype.String(code)}
}

func maxmindASN(asn uint32, org string) mmdbtype.Map {
	return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(asn), "autonomous_system_organization": mmdbtype.String(org)}
}
