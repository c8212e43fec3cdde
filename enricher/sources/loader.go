package sources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gaissmai/bart"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrInvalidConfig is wrapped by every Config.Validate error.
var ErrInvalidConfig = errors.New("invalid sources configuration")

// Config names the data files; each is optional.
type Config struct {
	CountryFile   string        // MMDB with countries
	ASNFiles      []string      // MMDBs or range CSVs (told apart by content); earlier files win
	NetworksFile  string        // YAML: networks by prefix
	ExportersFile string        // YAML: exporters by sampler address
	PollInterval  time.Duration // how often Run checks the files for a change; 0: only on SIGHUP
}

// DefaultConfig returns a Config with no file and a 5 s poll.
func DefaultConfig() Config { return Config{PollInterval: 5 * time.Second} }

// Validate reports the first invalid field, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if c.PollInterval < 0 {
		return bad("Config.PollInterval is negative (%s); use 0 to reload on SIGHUP only", c.PollInterval)
	}
	seen := map[string]int{}
	for i, f := range c.ASNFiles {
		if f == "" {
			return bad("Config.ASNFiles[%d] is empty", i)
		}
		if j, dup := seen[f]; dup {
			return bad("Config.ASNFiles[%d] repeats Config.ASNFiles[%d] (%s)", i, j, f)
		}
		seen[f] = i
	}
	return nil
}

// files lists every configured file once.
func (c Config) files() []string {
	var out []string
	for _, f := range append([]string{c.CountryFile, c.NetworksFile, c.ExportersFile}, c.ASNFiles...) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// mmdbMarker starts the metadata section at the end of every MMDB file.
var mmdbMarker = []byte("\xab\xcd\xefMaxMind.com")

// isMMDB tells an MMDB from a range CSV: by its name, else by the metadata
// marker in its last 128 KiB (where the format puts it).
func isMMDB(path string) bool {
	if strings.HasSuffix(strings.ToLower(path), ".mmdb") {
		return true
	}
	f, err := os.Open(path)
	if err != nil {
		return false // read as a CSV, which reports the error
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	off := max(fi.Size()-128<<10, 0)
	tail := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(tail, off); err != nil {
		return false
	}
	return bytes.Contains(tail, mmdbMarker)
}

// Source labels of flowpipeline_enricher_lookups_total.
type Source int

const (
	SourceCountry Source = iota
	SourceASN
	SourceNetwork
	SourceExporter
	SourceInterface
	numSources
)

var sourceNames = [numSources]string{"country", "asn", "network", "exporter", "interface"}

func (s Source) String() string { return sourceNames[s] }

// LookupCounts counts lookups in plain integers, cheap enough for the hot
// path; a caller keeps one per goroutine and hands it to
// LookupMetrics.Add once per batch.
type LookupCounts struct {
	Hit, Miss [numSources]uint64
}

// Count records one lookup of src.
func (c *LookupCounts) Count(src Source, hit bool) {
	if hit {
		c.Hit[src]++
	} else {
		c.Miss[src]++
	}
}

// LookupMetrics is flowpipeline_enricher_lookups_total{source,result}.
type LookupMetrics struct {
	hit, miss [numSources]prometheus.Counter
}

// Add adds c to the counters and zeroes c.
func (m *LookupMetrics) Add(c *LookupCounts) {
	for s := range numSources {
		if c.Hit[s] > 0 {
			m.hit[s].Add(float64(c.Hit[s]))
		}
		if c.Miss[s] > 0 {
			m.miss[s].Add(float64(c.Miss[s]))
		}
	}
	*c = LookupCounts{}
}

// Reload results, the result label of flowpipeline_enricher_reloads_total.
const (
	ReloadOK    = "ok"
	ReloadError = "error"
)

// Loader holds the current Set and replaces it when the files change.
type Loader struct {
	cfg    Config
	logger *slog.Logger
	cur    atomic.Pointer[Set]

	mu    sync.Mutex          // serialises reloads
	stats map[string]fileStat // of each file as last read (good or bad)

	lookups  *LookupMetrics
	reloads  *prometheus.CounterVec
	loadedAt prometheus.Gauge

	started chan struct{} // closed once Run listens for SIGHUP (tests)
}

type fileStat struct {
	mtime time.Time
	size  int64
}

// NewLoader validates cfg, loads every file once and registers the metrics
// on reg (nil: not registered). A file that cannot be loaded at start is an
// error: there is no previous data to keep.
func NewLoader(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Loader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	const ns, sub = "flowpipeline", "enricher"
	l := &Loader{
		cfg: cfg, logger: logger, stats: map[string]fileStat{}, started: make(chan struct{}),
		lookups: &LookupMetrics{},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reloads_total",
			Help: "Loads of a data file, by file and result (ok, error); on error the previous data stays in use."}, []string{"file", "result"}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sources_loaded_timestamp_seconds",
			Help: "Unix time of the last successful (re)load of the data files."}),
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lookups_total",
		Help: "Data source lookups, by source (country, asn, network, exporter, interface) and result (hit, miss)."}, []string{"source", "result"})
	for s := range numSources {
		l.lookups.hit[s] = lookups.WithLabelValues(s.String(), "hit")
		l.lookups.miss[s] = lookups.WithLabelValues(s.String(), "miss")
	}
	for _, f := range cfg.files() {
		l.reloads.WithLabelValues(f, ReloadOK)
		l.reloads.WithLabelValues(f, ReloadError)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{lookups, l.reloads, l.loadedAt} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering the enricher's source metrics: %w", err)
			}
		}
	}
	if err := l.reload(nil); err != nil {
		return nil, err
	}
	return l, nil
}

// Current returns the current Set (never nil after NewLoader).
func (l *Loader) Current() *Set { return l.cur.Load() }

// Metrics returns the lookup counters to which callers Add their counts.
func (l *Loader) Metrics() *LookupMetrics { return l.lookups }

// Reload loads every file again. On any error the previous Set stays in
// use; the error names the file.
func (l *Loader) Reload() error { return l.reload(nil) }

// Run reloads on SIGHUP and, every PollInterval, when a file's modification
// time or size changed, until ctx ends. Errors are logged and counted.
func (l *Loader) Run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	close(l.started)
	var tick <-chan time.Time
	if l.cfg.PollInterval > 0 {
		t := time.NewTicker(l.cfg.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			l.logger.Info("SIGHUP: reloading the data files")
			_ = l.Reload() // logged and counted in reload
		case <-tick:
			if changed := l.changed(); len(changed) > 0 {
				l.logger.Info("data files changed: reloading", "files", changed)
				_ = l.reload(changed)
			}
		}
	}
}

// changed returns the files whose stat differs from when they were last read.
func (l *Loader) changed() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for _, f := range l.cfg.files() {
		st, err := stat(f)
		if err != nil {
			// Being replaced (rename, or written by an editor): look again
			// at the next poll rather than fail on a moment's absence.
			continue
		}
		if st != l.stats[f] {
			out[f] = true
		}
	}
	return out
}

func stat(path string) (fileStat, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{}, err
	}
	return fileStat{fi.ModTime(), fi.Size()}, nil
}

// reload builds a new Set and swaps it in. only == nil reloads every file;
// otherwise only the parts with a file in only are read again, the others
// reused from the current Set.
func (l *Loader) reload(only map[string]bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.cur.Load()
	next := &Set{parts: map[string]any{}}
	var errs []error
	// load reads one part (one file, or the merged CSVs), or reuses it when
	// none of its files changed, and counts the result per file.
	load := func(key string, files []string, fn func() (any, error)) any {
		if only != nil && prev != nil {
			if v, ok := prev.parts[key]; ok && !slices.ContainsFunc(files, func(f string) bool { return only[f] }) {
				next.parts[key] = v
				return v
			}
		}
		for _, f := range files {
			if st, err := stat(f); err == nil {
				l.stats[f] = st // stat before read: a change while reading is seen at the next poll
			}
		}
		v, err := fn()
		result := ReloadOK
		if err != nil {
			result = ReloadError
			errs = append(errs, err)
			v = nil
		} else {
			next.parts[key] = v
		}
		for _, f := range files {
			l.reloads.WithLabelValues(f, result).Inc()
		}
		return v
	}
	c := l.cfg
	if c.CountryFile != "" {
		next.country, _ = load("country:"+c.CountryFile, []string{c.CountryFile}, func() (any, error) { return loadCountry(c.CountryFile) }).(*countryDB)
	}
	// The CSVs merge into one table, loaded together at the first CSV's
	// place in the order of lookups; each MMDB stands alone.
	var csvs []string
	for _, f := range c.ASNFiles {
		if !isMMDB(f) {
			csvs = append(csvs, f)
		}
	}
	for _, f := range c.ASNFiles {
		var v any
		switch {
		case isMMDB(f):
			v = load("asn:"+f, []string{f}, func() (any, error) { return loadASNMMDB(f) })
		case f == csvs[0]:
			v = load("asn-csv:"+strings.Join(csvs, ","), csvs, func() (any, error) {
				r, clipped, err := loadASNCSV(csvs)
				if err != nil {
					return nil, err
				}
				for _, c := range clipped {
					l.logger.Warn("overlapping ASN ranges: the later one wins from its start", "range", c)
				}
				return r, nil
			})
		}
		if src, ok := v.(asnSource); ok {
			next.asn = append(next.asn, src)
		}
	}
	if c.NetworksFile != "" {
		next.networks, _ = load("networks:"+c.NetworksFile, []string{c.NetworksFile}, func() (any, error) { return loadNetworks(c.NetworksFile) }).(*bart.Table[*Network])
	}
	if c.ExportersFile != "" {
		next.exporters, _ = load("exporters:"+c.ExportersFile, []string{c.ExportersFile}, func() (any, error) { return loadExporters(c.ExportersFile) }).(map[netip.Addr]*Exporter)
	}
	if err := errors.Join(errs...); err != nil {
		if prev != nil {
			l.logger.Error("reloading the data files failed; the previous data stays in use", "err", err)
		}
		return fmt.Errorf("loading the enricher's data files: %w", err)
	}
	l.cur.Store(next)
	l.loadedAt.SetToCurrentTime()
	l.logger.Info("data files loaded", "files", l.cfg.files())
	return nil
}
