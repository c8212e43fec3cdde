package sources

import (
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// asnRanges answers ASN lookups from range CSVs (first_ip,last_ip,asn,name,
// the ip-location-db asn format): per family, the ranges sorted by first
// address in a slice of their own (what the binary search reads, so it
// touches few cache lines), and the rest beside it.
type asnRanges struct {
	first4 []uint32
	rest4  []rangeInfo4
	// idx4[h] is the index of the first IPv4 range whose first address is
	// in /16 h or above: a lookup searches only its /16's ranges (a few
	// instead of 19 steps over 400k, each a likely cache miss).
	idx4   []uint32
	first6 []u128
	rest6  []rangeInfo6
}

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

type rangeInfo4 struct {
	last uint32
	asn  uint32
	name string
}

type rangeInfo6 struct {
	last u128
	asn  uint32
	name string
}

func v4(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func v6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (r *asnRanges) lookup(a netip.Addr) (uint32, string, bool) {
	if a.Is4() {
		x := v4(a)
		// The last range whose first address is <= x: the one before the
		// first in x's /16 with a first address above x.
		h := x >> 16
		lo, hi := int(r.idx4[h]), int(r.idx4[h+1])
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if r.first4[m] <= x {
				lo = m + 1
			} else {
				hi = m
			}
		}
		if lo == 0 {
			return 0, "", false
		}
		in := &r.rest4[lo-1]
		if x > in.last {
			return 0, "", false
		}
		return in.asn, in.name, true
	}
	if !a.Is6() {
		return 0, "", false
	}
	x := v6(a)
	lo, hi := 0, len(r.first6)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(r.first6[m]) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return 0, "", false
	}
	in := &r.rest6[lo-1]
	if in.last.less(x) {
		return 0, "", false
	}
	return in.asn, in.name, true
}

// csvRange is a parsed row, with where it came from for error messages.
type csvRange struct {
	first, last netip.Addr
	asn         uint32
	name        string
	file        string
	line        int
}

// loadASNCSV reads range CSVs (several files merge into one table) and
// rejects bad rows, naming the file and line.
//
// Overlaps: a range that starts inside the previous one and ends after it
// takes over from its first address, and the previous range is cut short
// there (the real ip-location-db asn-ipv4.csv has one such pair); each cut
// is reported in clipped. A range inside another one, or two ranges with the
// same first address, would be ambiguous and is an error.
func loadASNCSV(paths []string) (r *asnRanges, clipped []string, err error) {
	var rows []csvRange
	names := map[string]string{} // interned: many ranges share an organisation
	for _, path := range paths {
		if rows, err = readASNCSV(path, rows, names); err != nil {
			return nil, nil, err
		}
	}
	slices.SortStableFunc(rows, func(a, b csvRange) int { return a.first.Compare(b.first) })
	kept := rows[:0:0]
	for _, row := range rows {
		if n := len(kept); n > 0 && kept[n-1].first.Is4() == row.first.Is4() && row.first.Compare(kept[n-1].last) <= 0 {
			p := &kept[n-1]
			if row.first == p.first || row.last.Compare(p.last) <= 0 {
				return nil, nil, fmt.Errorf("%s:%d: range %s-%s overlaps %s-%s of %s:%d and does not extend past it; each address may be in one range only",
					row.file, row.line, row.first, row.last, p.first, p.last, p.file, p.line)
			}
			clipped = append(clipped, fmt.Sprintf("%s:%d: range %s-%s (AS%d) cut short at %s, where %s:%d (%s-%s, AS%d) starts",
				p.file, p.line, p.first, p.last, p.asn, row.first.Prev(), row.file, row.line, row.first, row.last, row.asn))
			p.last = row.first.Prev()
		}
		kept = append(kept, row)
	}
	r = &asnRanges{}
	for _, row := range kept {
		if row.first.Is4() {
			r.first4 = append(r.first4, v4(row.first))
			r.rest4 = append(r.rest4, rangeInfo4{last: v4(row.last), asn: row.asn, name: row.name})
		} else {
			r.first6 = append(r.first6, v6(row.first))
			r.rest6 = append(r.rest6, rangeInfo6{last: v6(row.last), asn: row.asn, name: row.name})
		}
	}
	r.first4, r.rest4 = slices.Clip(r.first4), slices.Clip(r.rest4)
	r.idx4 = make([]uint32, 1<<16+1)
	i := 0
	for h := range 1<<16 + 1 {
		for i < len(r.first4) && r.first4[i]>>16 < uint32(h) {
			i++
		}
		r.idx4[h] = uint32(i)
	}
	r.first6, r.rest6 = slices.Clip(r.first6), slices.Clip(r.rest6)
	return r, clipped, nil
}

func readASNCSV(path string, rows []csvRange, names map[string]string) ([]csvRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return rows, err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = 4
	cr.ReuseRecord = true
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return rows, fmt.Errorf("%s:%d: not a first_ip,last_ip,asn,name row: %w", path, pe.Line, pe.Err)
			}
			return rows, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		first, err1 := netip.ParseAddr(rec[0])
		last, err2 := netip.ParseAddr(rec[1])
		if err := errors.Join(err1, err2); err != nil {
			if line == 1 && (rec[0] == "first_ip" || rec[0] == "start_ip") {
				continue // a header row
			}
			return rows, fmt.Errorf("%s:%d: bad address: %w", path, line, err)
		}
		if first.Zone() != "" || last.Zone() != "" || first.Is4() != last.Is4() {
			return rows, fmt.Errorf("%s:%d: %s and %s must be plain addresses of one family", path, line, rec[0], rec[1])
		}
		if last.Less(first) {
			return rows, fmt.Errorf("%s:%d: range %s-%s is inverted (last address before the first)", path, line, first, last)
		}
		asn, err := strconv.ParseUint(strings.TrimPrefix(rec[2], "AS"), 10, 32)
		if err != nil {
			return rows, fmt.Errorf("%s:%d: AS number %q is not a 32-bit number", path, line, rec[2])
		}
		name, ok := names[rec[3]]
		if !ok {
			name = pb.ClipText(strings.Clone(rec[3]), pb.MaxNameBytes)
			names[rec[3]] = name
		}
		rows = append(rows, csvRange{first: first, last: last, asn: uint32(asn), name: name, file: path, line: line})
	}
	return rows, nil
}
