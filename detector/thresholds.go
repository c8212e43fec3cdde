package detector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v4"
)

// Limit is one threshold: an attack holds while any set rate reaches it.
// Zero leaves that rate unchecked.
type Limit struct {
	Bps   uint64 `yaml:"bps"`   // bits per second
	Pps   uint64 `yaml:"pps"`   // packets per second
	Flows uint64 `yaml:"flows"` // flow records per second
}

func (l Limit) set() bool { return l.Bps != 0 || l.Pps != 0 || l.Flows != 0 }

// Thresholds are the limits per destination address (Addr, by vector) and
// per destination network's aggregate (Networks, by dst_net_name, by
// vector). A vector without a limit is not checked.
type Thresholds struct {
	Addr     [NumVectors]Limit
	Networks map[string]*[NumVectors]Limit
}

// DefaultThresholds are the built-in limits per destination address. They
// sit well above what the mocker's realistic traffic sends to its busiest
// destination at ten times its default rate (docs/detector.md lists
// those figures): sampled flows of up to 1000 packets at 1:4096 make
// several million packets per second in single steps.
func DefaultThresholds() *Thresholds {
	t := &Thresholds{}
	amp := Limit{Bps: 1_000_000_000, Pps: 200_000, Flows: 200}
	t.Addr = [NumVectors]Limit{
		VectorTotal:     {Bps: 250_000_000_000, Pps: 50_000_000, Flows: 5000},
		VectorFragment:  amp,
		VectorICMP:      {Bps: 6_000_000_000, Pps: 8_000_000, Flows: 400},
		VectorSYN:       {Bps: 25_000_000_000, Pps: 5_000_000, Flows: 400},
		VectorDNS:       {Bps: 8_000_000_000, Pps: 4_000_000, Flows: 400},
		VectorNTP:       {Bps: 2_000_000_000, Pps: 2_000_000, Flows: 200},
		VectorSSDP:      amp,
		VectorMemcached: amp,
		VectorCLDAP:     amp,
		VectorChargen:   amp,
		VectorSNMP:      amp,
		VectorUDP:       {Bps: 50_000_000_000, Pps: 12_000_000, Flows: 1200},
	}
	return t
}

// The thresholds file's layout:
//
//	default: {bps: 1000000000, pps: 200000, flows: 20000}   # per destination address
//	vectors: {dns-amp: {pps: 50000}, syn: {pps: 100000}}
//	networks:
//	  customer-a: {pps: 50000, vectors: {dns-amp: {pps: 10000}}}   # by dst_net_name
type thresholdsFile struct {
	Default  *Limit                  `yaml:"default"`
	Vectors  map[string]Limit        `yaml:"vectors"`
	Networks map[string]networkLimit `yaml:"networks"`
}

type networkLimit struct {
	Bps     uint64           `yaml:"bps"`
	Pps     uint64           `yaml:"pps"`
	Flows   uint64           `yaml:"flows"`
	Vectors map[string]Limit `yaml:"vectors"`
}

// maxNetworks bounds the networks of a thresholds file: each is tracked
// for every step.
const maxNetworks = 10000

// ParseThresholds reads a thresholds file. An entry replaces the built-in
// limit of its vector whole (a rate it leaves out is not checked);
// vectors it does not name keep the built-in limits. A network's limits
// apply to the sum of the traffic to its addresses; a network checks only
// the vectors it names (bps/pps/flows at its top level are its total).
func ParseThresholds(data []byte) (*Thresholds, error) {
	var f thresholdsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, fmt.Errorf("thresholds: %w", err)
	}
	t := DefaultThresholds()
	if f.Default != nil {
		t.Addr[VectorTotal] = *f.Default
	}
	if err := applyVectors(&t.Addr, f.Vectors, "vectors"); err != nil {
		return nil, err
	}
	if len(f.Networks) > maxNetworks {
		return nil, fmt.Errorf("thresholds: %d networks, more than the %d allowed", len(f.Networks), maxNetworks)
	}
	names := make([]string, 0, len(f.Networks))
	for n := range f.Networks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "" {
			return nil, errors.New("thresholds: networks: a network name is empty")
		}
		nl := f.Networks[n]
		lims := &[NumVectors]Limit{VectorTotal: {Bps: nl.Bps, Pps: nl.Pps, Flows: nl.Flows}}
		if err := applyVectors(lims, nl.Vectors, "networks: "+n+": vectors"); err != nil {
			return nil, err
		}
		if t.Networks == nil {
			t.Networks = map[string]*[NumVectors]Limit{}
		}
		t.Networks[n] = lims
	}
	return t, nil
}

func applyVectors(dst *[NumVectors]Limit, src map[string]Limit, where string) error {
	for name, l := range src {
		v, ok := ParseVector(name)
		if !ok {
			return fmt.Errorf("thresholds: %s: unknown vector %q; the vectors are %v", where, name, vectorNames)
		}
		dst[v] = l
	}
	return nil
}

// LoadThresholds reads the file at path.
func LoadThresholds(path string) (*Thresholds, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the thresholds file: %w", err)
	}
	t, err := ParseThresholds(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// thresholdsLoader holds the current thresholds and reloads the file on
// SIGHUP and when its modification time or size changes.
type thresholdsLoader struct {
	path    string
	poll    time.Duration
	logger  *slog.Logger
	cur     atomic.Pointer[Thresholds]
	mu      sync.Mutex
	stat    [2]int64 // mtime (ns) and size when last read
	onLoad  func(ok bool)
	started chan struct{}
}

func newThresholdsLoader(path string, poll time.Duration, logger *slog.Logger, onLoad func(ok bool)) (*thresholdsLoader, error) {
	l := &thresholdsLoader{path: path, poll: poll, logger: logger, onLoad: onLoad, started: make(chan struct{})}
	if path == "" {
		l.cur.Store(DefaultThresholds())
		return l, nil
	}
	if err := l.reload(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *thresholdsLoader) current() *Thresholds { return l.cur.Load() }

func (l *thresholdsLoader) fileStat() [2]int64 {
	fi, err := os.Stat(l.path)
	if err != nil {
		return [2]int64{}
	}
	return [2]int64{fi.ModTime().UnixNano(), fi.Size()}
}

// reload reads the file; on error the previous thresholds stay.
func (l *thresholdsLoader) reload() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stat = l.fileStat() // before reading: a change while reading is seen at the next poll
	t, err := LoadThresholds(l.path)
	if l.onLoad != nil {
		l.onLoad(err == nil)
	}
	if err != nil {
		if l.cur.Load() != nil {
			l.logger.Error("reloading the thresholds failed; the previous thresholds stay in use", "error", err)
		}
		return err
	}
	l.cur.Store(t)
	l.logger.Info("thresholds loaded", "file", l.path, "networks", len(t.Networks))
	return nil
}

// run reloads on SIGHUP and on a change seen every poll, until ctx ends.
func (l *thresholdsLoader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	close(l.started)
	var tick <-chan time.Time
	if l.poll > 0 && l.path != "" {
		t := time.NewTicker(l.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if l.path == "" {
				l.logger.Info("SIGHUP: no thresholds file (-thresholds) to reload; the built-in thresholds stay")
				continue
			}
			l.logger.Info("SIGHUP: reloading the thresholds")
			_ = l.reload()
		case <-tick:
			l.mu.Lock()
			st := l.fileStat()
			changed := st != [2]int64{} && st != l.stat
			l.mu.Unlock()
			if changed {
				_ = l.reload()
			}
		}
	}
}
