package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEnvName(t *testing.T) {
	for flagName, want := range map[string]string{
		"kafka.brokers":      "KAFKA_BROKERS",
		"postgres.pass-file": "POSTGRES_PASS_FILE",
		"rate":               "RATE",
		"flows-per-record":   "FLOWS_PER_RECORD",
	} {
		if got := EnvName(flagName); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func newTestFlagSet() (*flag.FlagSet, *string, *int) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, fs.String("kafka.brokers", "default:9092", ""), fs.Int("flush.count", 10, "")
}

func TestParseEnvironment(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "env:9092")
	t.Setenv("FLUSH_COUNT", "20")

	fs, brokers, count := newTestFlagSet()
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *brokers != "env:9092" || *count != 20 {
		t.Errorf("from the environment: brokers %q, count %d; want env:9092, 20", *brokers, *count)
	}

	// The command line wins over the environment.
	fs, brokers, count = newTestFlagSet()
	if err := Parse(fs, []string{"-kafka.brokers", "cli:9092"}); err != nil {
		t.Fatal(err)
	}
	if *brokers != "cli:9092" || *count != 20 {
		t.Errorf("command line and environment: brokers %q, count %d; want cli:9092, 20", *brokers, *count)
	}
}

// TestParsePrefixed: with a prefix only the prefixed variables count; the
// generic names other tools export change nothing.
func TestParsePrefixed(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "generic:9092")
	t.Setenv("FLUSH_COUNT", "30")
	t.Setenv("DEMO_FLUSH_COUNT", "40")
	fs, brokers, count := newTestFlagSet()
	if err := ParsePrefixed(fs, nil, "DEMO_"); err != nil {
		t.Fatal(err)
	}
	if *brokers != "default:9092" || *count != 40 {
		t.Errorf("brokers %q, count %d; want default:9092 (KAFKA_BROKERS ignored), 40 (DEMO_FLUSH_COUNT)", *brokers, *count)
	}
	t.Setenv("DEMO_FLUSH_COUNT", "forty")
	fs, _, _ = newTestFlagSet()
	err := ParsePrefixed(fs, nil, "DEMO_")
	if err == nil || !strings.Contains(err.Error(), `environment variable DEMO_FLUSH_COUNT="forty"`) {
		t.Errorf("bad prefixed variable: error %v, want it to name DEMO_FLUSH_COUNT", err)
	}
	var usage strings.Builder
	fs, _, _ = newTestFlagSet()
	fs.SetOutput(&usage)
	SetUsagePrefixed(fs, "test", "DEMO_")
	fs.Usage()
	if !strings.Contains(usage.String(), "(env DEMO_KAFKA_BROKERS,") || strings.Contains(usage.String(), "(env KAFKA_BROKERS") {
		t.Errorf("usage does not show the prefixed variables:\n%s", usage.String())
	}
}

func TestParseErrors(t *testing.T) {
	t.Setenv("FLUSH_COUNT", "ten")
	fs, _, _ := newTestFlagSet()
	err := Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "FLUSH_COUNT") {
		t.Errorf("bad environment value: got %v, want an error naming FLUSH_COUNT", err)
	}

	fs, _, _ = newTestFlagSet()
	if err := Parse(fs, []string{"-flush.count", "1", "stray"}); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Errorf("stray argument: got %v, want an error naming it", err)
	}
}

func TestFlagNames(t *testing.T) {
	sentinel := errors.New("invalid configuration")
	err := fmt.Errorf("%w: Config.RetryMax 1s below Config.RetryMin 2s; Config.Brokers is empty; Config.Other stays", sentinel)
	got := FlagNames(err, map[string]string{"Brokers": "-kafka.brokers", "RetryMin": "-retry.min", "RetryMax": "-retry.max"})
	want := "invalid configuration: -retry.max 1s below -retry.min 2s; -kafka.brokers is empty; Config.Other stays"
	if got.Error() != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if !errors.Is(got, sentinel) {
		t.Error("the rewritten error no longer unwraps to the original")
	}
	if FlagNames(nil, nil) != nil {
		t.Error("FlagNames(nil) is not nil")
	}
}

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		ok            bool
	}{
		{"info", "text", true},
		{"debug", "json", true},
		{"warn", "", true},
		{"loud", "text", false},
		{"info", "xml", false},
	} {
		_, err := NewLogger(io.Discard, tc.level, tc.format)
		if (err == nil) != tc.ok {
			t.Errorf("NewLogger(%q, %q) error = %v, want ok=%v", tc.level, tc.format, err, tc.ok)
		}
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" a:1, ,b:2,")
	if len(got) != 2 || got[0] != "a:1" || got[1] != "b:2" {
		t.Errorf("SplitList = %q, want [a:1 b:2]", got)
	}
}

func TestServeMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "flowpipeline_test_things_total"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := ServeMetrics(ctx, addr, reg, ready.Load, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "flowpipeline_test_things_total 3") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", code)
	}
	if err := Probe("http://"+addr+"/readyz", time.Second); err == nil {
		t.Error("Probe of /readyz before ready succeeded")
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}
	if err := Probe("http://"+addr+"/readyz", time.Second); err != nil {
		t.Errorf("Probe of /readyz when ready: %v", err)
	}

	// A taken address is an error at start, not a log line later.
	if err := ServeMetrics(ctx, addr, reg, nil, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("a second server on the same address started")
	}
}
