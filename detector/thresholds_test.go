package detector

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseThresholds(t *testing.T) {
	def := DefaultThresholds()
	cases := []struct {
		name, yaml string
		check      func(*Thresholds) bool
		err        string
	}{
		{"empty file: built-ins", "", func(th *Thresholds) bool { return th.Addr == def.Addr && th.Networks == nil }, ""},
		{"the issue's example", `
default: {bps: 1000000000, pps: 200000, flows: 20000}   # per destination address
vectors: {dns-amp: {pps: 50000}, syn: {pps: 100000}}
networks:
  customer-a: {pps: 50000}                                # by dst_net_name
`, func(th *Thresholds) bool {
			want := def.Addr
			want[VectorTotal] = Limit{Bps: 1e9, Pps: 200000, Flows: 20000}
			want[VectorDNS] = Limit{Pps: 50000}
			want[VectorSYN] = Limit{Pps: 100000}
			return th.Addr == want && len(th.Networks) == 1 && *th.Networks["customer-a"] == [NumVectors]Limit{VectorTotal: {Pps: 50000}}
		}, ""},
		{"network vectors", "networks: {customer-b: {flows: 10, vectors: {icmp-flood: {pps: 7}}}}", func(th *Thresholds) bool {
			return *th.Networks["customer-b"] == [NumVectors]Limit{VectorTotal: {Flows: 10}, VectorICMP: {Pps: 7}}
		}, ""},
		{"disable a vector", "vectors: {udp-flood: {}}", func(th *Thresholds) bool { return !th.Addr[VectorUDP].set() }, ""},
		{"unknown vector", "vectors: {smurf: {pps: 1}}", nil, `unknown vector "smurf"`},
		{"unknown network vector", "networks: {a: {vectors: {x: {pps: 1}}}}", nil, `networks: a: vectors: unknown vector "x"`},
		{"unknown key", "defaults: {pps: 1}", nil, "field defaults not found"},
		{"unknown rate", "default: {kpps: 1}", nil, "field kpps not found"},
		{"negative", "default: {pps: -1}", nil, "cannot construct !!int `-1` into uint64"},
		{"not yaml", "default: [", nil, "thresholds:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			th, err := ParseThresholds([]byte(c.yaml))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(th) {
				t.Errorf("thresholds %+v", th)
			}
		})
	}
}

// TestThresholdsReload: the file is reloaded on a change (poll) and on
// SIGHUP; a bad file keeps the previous thresholds; every load is counted.
func TestThresholdsReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "thresholds.yml")
	// Written aside and renamed, as editors and config tools do, so a poll
	// never reads half a file.
	write := func(s string) {
		t.Helper()
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	newLoader := func(poll time.Duration) (*thresholdsLoader, func(string) float64) {
		t.Helper()
		m, err := newMetrics(prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		l, err := newThresholdsLoader(path, poll, slog.New(slog.DiscardHandler), func(ok bool) {
			if ok {
				m.reloads.WithLabelValues("ok").Inc()
			} else {
				m.reloads.WithLabelValues("error").Inc()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		go l.run(t.Context())
		<-l.started
		return l, func(r string) float64 { return testutil.ToFloat64(m.reloads.WithLabelValues(r)) }
	}

	write("default: {pps: 1}\n")
	l, loads := newLoader(20 * time.Millisecond)
	pps := func() uint64 { return l.current().Addr[VectorTotal].Pps }
	if pps() != 1 || loads("ok") != 1 {
		t.Fatalf("pps %d, ok loads %v; want 1 and 1", pps(), loads("ok"))
	}
	write("default: {pps: 22}\n")
	waitFor("the changed file", func() bool { return pps() == 22 })
	write("default: {pps: [\n")
	waitFor("the bad file counted", func() bool { return loads("error") == 1 })
	time.Sleep(100 * time.Millisecond) // a few more polls: nothing changed, nothing loaded
	if pps() != 22 || loads("ok") != 2 || loads("error") != 1 {
		t.Errorf("after a bad file: pps %d, loads ok %v error %v; want the previous 22, 2 and 1", pps(), loads("ok"), loads("error"))
	}

	// SIGHUP, with a loader that does not poll.
	write("default: {pps: 33}\n")
	h, hloads := newLoader(0)
	write("default: {pps: 44}\n")
	time.Sleep(50 * time.Millisecond)
	if got := h.current().Addr[VectorTotal].Pps; got != 33 {
		t.Fatalf("without SIGHUP pps %d, want 33", got)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the SIGHUP reload", func() bool { return h.current().Addr[VectorTotal].Pps == 44 })
	if hloads("ok") != 2 {
		t.Errorf("%v ok loads, want 2", hloads("ok"))
	}
}
