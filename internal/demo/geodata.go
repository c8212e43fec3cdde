package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// GeodataFiles are the ip-location-db files `make geodata` puts in dir:
// the country MMDB, then the IPv4 and IPv6 ASN range CSVs.
func GeodataFiles(dir string) (country string, asn []string) {
	return filepath.Join(dir, "geo-whois-asn-country-mmdb", "geo-whois-asn-country.mmdb"),
		[]string{filepath.Join(dir, "asn", "asn-ipv4.csv"), filepath.Join(dir, "asn", "asn-ipv6.csv")}
}

// Geodata returns the country and ASN files in dir for Config.CountryFile
// and Config.ASNFiles. When one is missing it runs fetch (the command that
// fills dir, e.g. `bash .ci/geodata/fetch.sh`; its output goes to out) and
// looks again. When they are still missing it says so once on out and
// returns none: the demo then runs with the networks and exporters files
// alone.
func Geodata(ctx context.Context, dir string, fetch []string, out io.Writer) (country string, asn []string) {
	if dir == "" {
		return "", nil
	}
	present := func() bool {
		c, a := GeodataFiles(dir)
		for _, p := range append([]string{c}, a...) {
			if _, err := os.Stat(p); err != nil {
				return false
			}
		}
		return true
	}
	if !present() && len(fetch) > 0 {
		fmt.Fprintf(out, "geodata: not in %s yet; fetching it (once) with %q...\n", dir, fetch)
		cmd := exec.CommandContext(ctx, fetch[0], fetch[1:]...)
		cmd.Env = append(os.Environ(), "FLOWPIPELINE_GEODATA="+dir)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(out, "geodata: the fetch failed: %v\n", err)
		}
	}
	if !present() {
		fmt.Fprintf(out, "geodata: the ip-location-db files are not in %s (run `make geodata` with npm and network access): no countries or AS names; the demo runs with the networks and exporters files alone.\n", dir)
		return "", nil
	}
	c, a := GeodataFiles(dir)
	return c, a
}
