package sources

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// loaderFiles writes one file of each kind and returns their Config.
func loaderFiles(t *testing.T, dir string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.CountryFile = writeMMDB(t, dir, "country.mmdb", "country ipvAll", []mmdbEntry{{"8.8.8.0/24", flatCountry("US")}})
	cfg.ASNFiles = []string{
		writeFile(t, dir, "asn-ipv4.csv", "8.8.8.0,8.8.8.255,15169,Google LLC\n"),
		writeMMDB(t, dir, "asn.mmdb", "GeoLite2-ASN", []mmdbEntry{{"1.1.1.0/24", maxmindASN(13335, "Cloudflare, Inc.")}}),
	}
	cfg.NetworksFile = writeFile(t, dir, "networks.yml", "networks:\n  8.8.8.0/24: {name: google}\n")
	cfg.ExportersFile = writeFile(t, dir, "exporters.yml", "exporters:\n  192.0.2.1: {name: edge1}\n")
	return cfg
}

var (
	google = netip.MustParseAddr("8.8.8.8")
	edge1  = netip.MustParseAddr("192.0.2.1")
)

// snapshot is what a Set says about google and edge1.
type snapshot struct {
	country, asName, network, exporter string
	asn                                uint32
}

func snap(s *Set) snapshot {
	asn, name, _ := s.ASN(google)
	n, _ := s.Network(google)
	var exp string
	if e, ok := s.Exporter(edge1); ok {
		exp = e.Name
	}
	return snapshot{s.Country(google), name, n.Name, exp, asn}
}

func reloads(t *testing.T, l *Loader, file, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(l.reloads.WithLabelValues(file, result))
}

// rewrite replaces a file's content and moves its mtime forward, so a poll
// sees the change even within the file system's time granularity.
func rewrite(t *testing.T, path, content string, age time.Duration) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(age)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}

func TestLoaderReload(t *testing.T) {
	dir := t.TempDir()
	cfg := loaderFiles(t, dir)
	reg := prometheus.NewRegistry()
	l, err := NewLoader(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := snap(l.Current()), (snapshot{"US", "Google LLC", "google", "edge1", 15169}); got != want {
		t.Fatalf("first load: %+v, want %+v", got, want)
	}
	if got := reloads(t, l, cfg.NetworksFile, ReloadOK); got != 1 {
		t.Errorf("reloads ok of the networks file after the first load = %v, want 1", got)
	}

	// A changed file: new values visible after Reload.
	rewrite(t, cfg.NetworksFile, "networks:\n  8.8.0.0/16: {name: google-wide}\n", time.Second)
	rewrite(t, cfg.ASNFiles[0], "8.8.8.0,8.8.8.255,15169,Google LLC (renamed)\n", time.Second)
	before := l.Current()
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := snap(l.Current()), (snapshot{"US", "Google LLC (renamed)", "google-wide", "edge1", 15169}); got != want {
		t.Errorf("after reload: %+v, want %+v", got, want)
	}
	if got, want := snap(before), (snapshot{"US", "Google LLC", "google", "edge1", 15169}); got != want {
		t.Errorf("the previous Set changed under its readers: %+v, want %+v", got, want)
	}

	// A bad file: the previous Set stays, the error is counted once.
	good := l.Current()
	rewrite(t, cfg.ExportersFile, "exporters:\n  192.0.2.1: {name: edge1-new, boundary: sideways}\n", 2*time.Second)
	err = l.Reload()
	if err == nil || !strings.Contains(err.Error(), "exporters.yml") {
		t.Fatalf("Reload with a bad exporters file: err = %v, want one naming it", err)
	}
	if l.Current() != good {
		t.Error("a failed reload replaced the Set")
	}
	if got, want := snap(l.Current()), (snapshot{"US", "Google LLC (renamed)", "google-wide", "edge1", 15169}); got != want {
		t.Errorf("after a failed reload: %+v, want %+v", got, want)
	}
	if got := reloads(t, l, cfg.ExportersFile, ReloadError); got != 1 {
		t.Errorf("reload errors of the exporters file = %v, want 1", got)
	}
	if got := reloads(t, l, cfg.NetworksFile, ReloadError); got != 0 {
		t.Errorf("reload errors of the (good) networks file = %v, want 0", got)
	}
	if got := reloads(t, l, cfg.NetworksFile, ReloadOK); got != 3 {
		t.Errorf("reloads ok of the networks file = %v, want 3 (start and two reloads)", got)
	}
}

func TestLoaderStartErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := loaderFiles(t, dir)
	cfg.NetworksFile = writeFile(t, dir, "bad.yml", "networks:\n  nonsense: {}\n")
	if _, err := NewLoader(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "bad.yml") {
		t.Errorf("NewLoader with a bad networks file: err = %v", err)
	}
	cfg = loaderFiles(t, dir)
	cfg.CountryFile = filepath.Join(dir, "missing.mmdb")
	if _, err := NewLoader(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Errorf("NewLoader with a missing country file: err = %v", err)
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{PollInterval: -1}, "Config.PollInterval is negative"},
		{Config{ASNFiles: []string{"a.csv", ""}}, "Config.ASNFiles[1] is empty"},
		{Config{ASNFiles: []string{"a.csv", "a.csv"}}, "Config.ASNFiles[1] repeats Config.ASNFiles[0]"},
	} {
		err := c.cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidConfig with %q", c.cfg, err, c.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoaderPollsFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := loaderFiles(t, dir)
	cfg.PollInterval = 10 * time.Millisecond
	l, err := NewLoader(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	rewrite(t, cfg.NetworksFile, "networks:\n  8.8.8.8/32: {name: dns}\n", time.Second)
	waitFor(t, "the changed networks file to be loaded", func() bool { n, _ := l.Current().Network(google); return n.Name == "dns" })
	// Only the changed file was read again.
	if got := reloads(t, l, cfg.NetworksFile, ReloadOK); got != 2 {
		t.Errorf("reloads ok of the networks file = %v, want 2", got)
	}
	if got := reloads(t, l, cfg.CountryFile, ReloadOK); got != 1 {
		t.Errorf("reloads ok of the unchanged country file = %v, want 1", got)
	}

	// A bad change is counted once (not at every poll) and keeps the data.
	rewrite(t, cfg.ASNFiles[0], "8.8.8.0,8.8.8.255,not-a-number,Google LLC\n", 2*time.Second)
	waitFor(t, "the bad ASN file to be counted", func() bool { return reloads(t, l, cfg.ASNFiles[0], ReloadError) == 1 })
	time.Sleep(100 * time.Millisecond) // ten more polls
	if got := reloads(t, l, cfg.ASNFiles[0], ReloadError); got != 1 {
		t.Errorf("reload errors of the ASN file = %v after ten more polls, want 1", got)
	}
	if got, want := snap(l.Current()), (snapshot{"US", "Google LLC", "dns", "edge1", 15169}); got != want {
		t.Errorf("after a bad ASN file: %+v, want %+v", got, want)
	}
	// Fixed: loaded again.
	rewrite(t, cfg.ASNFiles[0], "8.8.8.0,8.8.8.255,15169,Google\n", 3*time.Second)
	waitFor(t, "the fixed ASN file to be loaded", func() bool { _, name, _ := l.Current().ASN(google); return name == "Google" })
}

func TestLoaderSIGHUP(t *testing.T) {
	// Our own handler first, so a SIGHUP can never reach the default action
	// (exit) whatever the order of events.
	own := make(chan os.Signal, 1)
	signal.Notify(own, syscall.SIGHUP)
	defer signal.Stop(own)

	dir := t.TempDir()
	cfg := loaderFiles(t, dir)
	cfg.PollInterval = 0 // SIGHUP only
	l, err := NewLoader(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-l.started

	rewrite(t, cfg.ExportersFile, "exporters:\n  192.0.2.1: {name: edge1-renamed}\n", time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := snap(l.Current()).exporter; got != "edge1" {
		t.Fatalf("reloaded without SIGHUP or poll: exporter %q", got)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGHUP to reload the exporters file", func() bool { return snap(l.Current()).exporter == "edge1-renamed" })
	if got := reloads(t, l, cfg.CountryFile, ReloadOK); got != 2 {
		t.Errorf("reloads ok of the country file = %v, want 2 (SIGHUP reloads every file)", got)
	}
}

func TestLookupMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := NewLoader(DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	var c LookupCounts
	for range 3 {
		c.Count(SourceASN, true)
	}
	c.Count(SourceASN, false)
	c.Count(SourceInterface, false)
	l.Metrics().Add(&c)
	if c != (LookupCounts{}) {
		t.Errorf("Add did not zero the counts: %+v", c)
	}
	l.Metrics().Add(&LookupCounts{Hit: [numSources]uint64{SourceCountry: 5}})
	want := `
# HELP flowpipeline_enricher_lookups_total Data source lookups, by source (country, asn, network, exporter, interface) and result (hit, miss).
# TYPE flowpipeline_enricher_lookups_total counter
flowpipeline_enricher_lookups_total{result="hit",source="asn"} 3
flowpipeline_enricher_lookups_total{result="hit",source="country"} 5
flowpipeline_enricher_lookups_total{result="hit",source="exporter"} 0
flowpipeline_enricher_lookups_total{result="hit",source="interface"} 0
flowpipeline_enricher_lookups_total{result="hit",source="network"} 0
flowpipeline_enricher_lookups_total{result="miss",source="asn"} 1
flowpipeline_enricher_lookups_total{result="miss",source="country"} 0
flowpipeline_enricher_lookups_total{result="miss",source="exporter"} 0
flowpipeline_enricher_lookups_total{result="miss",source="interface"} 1
flowpipeline_enricher_lookups_total{result="miss",source="network"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flowpipeline_enricher_lookups_total"); err != nil {
		t.Error(err)
	}
}

// IPinfo Lite holds countries and ASNs: one file as both, reloaded as both.
func TestLoaderOneFileTwoSources(t *testing.T) {
	dir := t.TempDir()
	path := writeMMDB(t, dir, "ipinfo_lite.mmdb", "ipinfo lite.mmdb", []mmdbEntry{{"8.8.8.0/24", ipinfoLite("US", "AS15169", "Google LLC")}})
	cfg := DefaultConfig()
	cfg.CountryFile, cfg.ASNFiles = path, []string{path}
	cfg.NetworksFile = writeFile(t, dir, "networks.yml", "networks:\n  8.8.8.0/24: {name: google}\n")
	l, err := NewLoader(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	check := func(country string, asn uint32, name string) {
		t.Helper()
		s := l.Current()
		if got := s.Country(google); got != country {
			t.Errorf("Country = %q, want %q", got, country)
		}
		if a, n, _ := s.ASN(google); a != asn || n != name {
			t.Errorf("ASN = %d %q, want %d %q", a, n, asn, name)
		}
	}
	check("US", 15169, "Google LLC")
	// Another file changes: both parts of the MMDB are reused.
	rewrite(t, cfg.NetworksFile, "networks:\n  8.8.8.0/24: {name: google2}\n", time.Second)
	if err := l.reload(l.changed()); err != nil {
		t.Fatal(err)
	}
	check("US", 15169, "Google LLC")
	writeMMDB(t, dir, "ipinfo_lite.mmdb", "ipinfo lite.mmdb", []mmdbEntry{{"8.8.8.0/24", ipinfoLite("CA", "AS15169", "Google")}})
	mt := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
	changed := l.changed()
	if !changed[path] || len(changed) != 1 {
		t.Fatalf("changed = %v, want only %s", changed, path)
	}
	if err := l.reload(changed); err != nil {
		t.Fatal(err)
	}
	check("CA", 15169, "Google")
	if got := reloads(t, l, path, ReloadOK); got != 4 {
		t.Errorf("reloads ok = %v, want 4 (loaded as country and as ASN, twice)", got)
	}
}
