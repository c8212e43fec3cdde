package sources

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// MMDB layouts, told apart by the metadata's database_type and, for types
// not known here, by the shape of the records.
const (
	layoutMaxMindCountry = "country.iso_code"                                        // GeoLite2/GeoIP2 Country and City, DB-IP Lite
	layoutFlatCountry    = "country_code"                                            // IPinfo Lite, ip-location-db
	layoutMaxMindASN     = "autonomous_system_number,autonomous_system_organization" // GeoLite2-ASN, DB-IP ASN Lite
	layoutIPinfoASN      = "asn,as_name"                                             // IPinfo Lite ("AS15169")
)

// The records of each layout, decoded into small structs: the decoder skips
// every other field.
type maxmindCountryRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
}

type flatCountryRecord struct {
	CountryCode string `maxminddb:"country_code"`
}

type maxmindASNRecord struct {
	Number       uint32 `maxminddb:"autonomous_system_number"`
	Organization string `maxminddb:"autonomous_system_organization"`
}

type ipinfoASNRecord struct {
	ASN  string `maxminddb:"asn"`
	Name string `maxminddb:"as_name"`
}

// openMMDB reads the whole file into memory (not mmap): a replaced Set may
// still be in use by a lookup, and heap memory is freed only when no
// lookup holds it any more, where an unmapped file would crash it.
func openMMDB(path string) (*maxminddb.Reader, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%s is not a readable MMDB file: %w", path, err)
	}
	return r, nil
}

// probeKeys returns the top-level keys of the first records with data, to
// tell a layout from the shape of the records when database_type is not
// one known here.
func probeKeys(r *maxminddb.Reader) (map[string]any, error) {
	n := 0
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, err
		}
		var m map[string]any
		if err := res.Decode(&m); err != nil {
			return nil, err
		}
		if len(m) > 0 {
			return m, nil
		}
		if n++; n > 100 {
			break
		}
	}
	return nil, errors.New("no record with data among the first networks")
}

func hasPath(m map[string]any, path ...string) bool {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = mm[p]; !ok {
			return false
		}
	}
	return true
}

func countryLayout(r *maxminddb.Reader) (string, error) {
	t := strings.ToLower(r.Metadata.DatabaseType)
	switch {
	case strings.Contains(t, "ipinfo"):
		return layoutFlatCountry, nil
	case strings.HasPrefix(t, "country ipv"): // ip-location-db: "country ipv4", "country ipv6", "country ipvAll"
		return layoutFlatCountry, nil
	case (strings.HasPrefix(t, "geoip2-") || strings.HasPrefix(t, "geolite2-") || strings.HasPrefix(t, "dbip-")) &&
		(strings.Contains(t, "country") || strings.Contains(t, "city") || strings.Contains(t, "enterprise")):
		return layoutMaxMindCountry, nil
	}
	m, err := probeKeys(r)
	if err != nil {
		return "", fmt.Errorf("database type %q is not one known here and its records cannot be read: %w", r.Metadata.DatabaseType, err)
	}
	switch {
	case hasPath(m, "country", "iso_code"):
		return layoutMaxMindCountry, nil
	case hasPath(m, "country_code"):
		return layoutFlatCountry, nil
	}
	return "", fmt.Errorf("database type %q has records with neither country.iso_code nor country_code (an ASN database? give it as an ASN file)", r.Metadata.DatabaseType)
}

func asnLayout(r *maxminddb.Reader) (string, error) {
	t := strings.ToLower(r.Metadata.DatabaseType)
	switch {
	case strings.Contains(t, "ipinfo"):
		return layoutIPinfoASN, nil
	case strings.HasSuffix(t, "-asn") || strings.Contains(t, "-asn-") || strings.HasSuffix(t, "-isp"):
		return layoutMaxMindASN, nil
	}
	m, err := probeKeys(r)
	if err != nil {
		return "", fmt.Errorf("database type %q is not one known here and its records cannot be read: %w", r.Metadata.DatabaseType, err)
	}
	switch {
	case hasPath(m, "autonomous_system_number"):
		return layoutMaxMindASN, nil
	case hasPath(m, "asn"):
		return layoutIPinfoASN, nil
	}
	return "", fmt.Errorf("database type %q has records with neither autonomous_system_number nor asn (a country database? give it as the country file)", r.Metadata.DatabaseType)
}

// countryDB answers country lookups from an MMDB. Every distinct record is
// decoded once at load (which also proves the whole file readable), so a
// lookup is a tree walk and a map read.
type countryDB struct {
	r      *maxminddb.Reader
	layout string
	byOff  map[uintptr]string
}

func loadCountry(path string) (*countryDB, error) {
	r, err := openMMDB(path)
	if err != nil {
		return nil, err
	}
	layout, err := countryLayout(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byOff, err := decodeRecords(path, r, layout, decodeCountry)
	if err != nil {
		return nil, err
	}
	return &countryDB{r: r, layout: layout, byOff: byOff}, nil
}

// decodeRecords decodes every distinct record of r once, keyed by its
// offset, so a lookup is a tree walk and a map read; it also proves the
// whole file readable at load.
func decodeRecords[T any](path string, r *maxminddb.Reader, layout string, decode func(maxminddb.Result, string) (T, error)) (map[uintptr]T, error) {
	byOff := map[uintptr]T{}
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("%s: reading network %s: %w", path, res.Prefix(), err)
		}
		off := res.Offset()
		if _, done := byOff[off]; done {
			continue
		}
		v, err := decode(res, layout)
		if err != nil {
			return nil, fmt.Errorf("%s: decoding the record of %s (layout %s): %w", path, res.Prefix(), layout, err)
		}
		byOff[off] = v
	}
	return byOff, nil
}

func decodeCountry(res maxminddb.Result, layout string) (string, error) {
	if layout == layoutMaxMindCountry {
		var rec maxmindCountryRecord
		err := res.Decode(&rec)
		return rec.Country.ISOCode, err
	}
	var rec flatCountryRecord
	err := res.Decode(&rec)
	return rec.CountryCode, err
}

func (db *countryDB) lookup(a netip.Addr) string {
	res := db.r.Lookup(a)
	if !res.Found() {
		return ""
	}
	return db.byOff[res.Offset()]
}

// asnSource is one ASN file: an MMDB or the merged range CSVs.
type asnSource interface {
	lookup(a netip.Addr) (uint32, string, bool)
}

type asnInfo struct {
	asn  uint32
	name string
}

type asnMMDB struct {
	r      *maxminddb.Reader
	layout string
	byOff  map[uintptr]asnInfo
}

func loadASNMMDB(path string) (*asnMMDB, error) {
	r, err := openMMDB(path)
	if err != nil {
		return nil, err
	}
	layout, err := asnLayout(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byOff, err := decodeRecords(path, r, layout, decodeASN)
	if err != nil {
		return nil, err
	}
	return &asnMMDB{r: r, layout: layout, byOff: byOff}, nil
}

func decodeASN(res maxminddb.Result, layout string) (asnInfo, error) {
	if layout == layoutMaxMindASN {
		var rec maxmindASNRecord
		err := res.Decode(&rec)
		return asnInfo{rec.Number, pb.ClipText(rec.Organization, pb.MaxNameBytes)}, err
	}
	var rec ipinfoASNRecord
	if err := res.Decode(&rec); err != nil {
		return asnInfo{}, err
	}
	if rec.ASN == "" { // IPinfo Lite has networks with a country but no AS
		return asnInfo{}, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(rec.ASN, "AS"), "as"), 10, 32)
	if err != nil {
		return asnInfo{}, fmt.Errorf("asn %q is not AS followed by a 32-bit number", rec.ASN)
	}
	return asnInfo{uint32(n), pb.ClipText(rec.Name, pb.MaxNameBytes)}, nil
}

func (db *asnMMDB) lookup(a netip.Addr) (uint32, string, bool) {
	res := db.r.Lookup(a)
	if !res.Found() {
		return 0, "", false
	}
	info := db.byOff[res.Offset()]
	if info.asn == 0 {
		return 0, "", false
	}
	return info.asn, info.name, true
}
