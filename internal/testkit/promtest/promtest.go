// Package promtest runs the real Prometheus server for tests: the binary
// `make prometheus` builds from the Go module proxy, on the compose stacks'
// scrape configurations (compose/prometheus/*.yml) rewritten to the
// addresses of the programs the test started, and queried over its HTTP
// API (/api/v1/query, /api/v1/targets).
//
// A missing binary skips the test loudly, or fails it when
// FLOWPIPELINE_REQUIRE_SERVICES=1 (testenv.Unavailable).
package promtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/spendletonliveaction/flow-pipeline/internal/proc"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// Version is the Prometheus module version the Makefile builds (release
// 3.13.2, the compose image prom/prometheus:v3.13.2).
const Version = "v0.313.2"

// RepoRoot is the directory of go.mod, found by walking up from the
// working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the repository root (no go.mod above the test directory)")
		}
		dir = parent
	}
}

// Binary is the path of the Prometheus server: FLOWPIPELINE_PROMETHEUS, or
// .cache/bin/prometheus-<Version> as `make prometheus` leaves it.
func Binary(t testing.TB) string {
	t.Helper()
	path := os.Getenv("FLOWPIPELINE_PROMETHEUS")
	if path == "" {
		path = filepath.Join(RepoRoot(t), ".cache", "bin", "prometheus-"+Version)
	}
	if _, err := os.Stat(path); err != nil {
		testenv.Unavailable(t, "Prometheus %s is not built (%v): run `make prometheus` or set FLOWPIPELINE_PROMETHEUS", Version, err)
	}
	return path
}

// Job is one scrape job of the merged configuration.
type Job struct {
	Name    string
	Service string // the compose service its targets name (host of host:port)
	Addr    string // where the test serves it
}

// allSkipped says whether every target's service is in skip, with the
// services (comma-separated) and the reason given for the first.
func allSkipped(targets []string, skip map[string]string) (services, reason string, ok bool) {
	var hosts []string
	for _, t := range targets {
		host, _, err := net.SplitHostPort(t)
		r, skipped := skip[host]
		if err != nil || !skipped {
			return "", "", false
		}
		if reason == "" {
			reason = r
		}
		hosts = append(hosts, host)
	}
	return strings.Join(hosts, ","), reason, len(targets) > 0
}

// MergeScrapeConfigs reads the compose stacks' Prometheus files, merges
// their scrape jobs (a job name must scrape the same targets in every
// file), and returns a configuration scraping every interval, in which
// each target's service is replaced by addrs[service] ("localhost" is
// Prometheus itself). A job whose service is in skip is left out and
// listed in skipped; a service in neither map is an error, so a job added
// to the stacks cannot go unnoticed.
func MergeScrapeConfigs(files []string, addrs map[string]string, skip map[string]string, interval time.Duration) (config []byte, jobs []Job, skipped []Job, err error) {
	type scrape struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	}
	merged := map[string][]string{} // job -> targets, as written
	var order []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, nil, err
		}
		var doc struct {
			ScrapeConfigs []scrape `yaml:"scrape_configs"`
		}
		var keys struct {
			ScrapeConfigs []map[string]any `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		if err := yaml.Unmarshal(raw, &keys); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		for i, s := range doc.ScrapeConfigs {
			for k := range keys.ScrapeConfigs[i] {
				if k != "job_name" && k != "static_configs" {
					return nil, nil, nil, fmt.Errorf("%s: job %s sets %s, which this harness does not carry over: extend promtest.MergeScrapeConfigs", f, s.JobName, k)
				}
			}
			var targets []string
			for _, st := range s.StaticConfigs {
				targets = append(targets, st.Targets...)
			}
			if services, reason, ok := allSkipped(targets, skip); ok {
				// A service the test does not run may be scraped differently
				// per stack (one ClickHouse server, or the cluster's nodes).
				if !slices.ContainsFunc(skipped, func(j Job) bool { return j.Name == s.JobName }) {
					skipped = append(skipped, Job{Name: s.JobName, Service: services, Addr: reason})
				}
				continue
			}
			if prev, ok := merged[s.JobName]; ok {
				if !slices.Equal(prev, targets) {
					return nil, nil, nil, fmt.Errorf("%s: job %s scrapes %v, another stack's file %v: one name, one target", f, s.JobName, targets, prev)
				}
				continue
			}
			if len(targets) != 1 {
				return nil, nil, nil, fmt.Errorf("%s: job %s has %d targets, want 1", f, s.JobName, len(targets))
			}
			merged[s.JobName] = targets
			order = append(order, s.JobName)
		}
	}
	var out []map[string]any
	for _, name := range order {
		host, _, err := net.SplitHostPort(merged[name][0])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("job %s: target %q: %w", name, merged[name][0], err)
		}
		if reason, ok := skip[host]; ok {
			skipped = append(skipped, Job{Name: name, Service: host, Addr: reason})
			continue
		}
		addr, ok := addrs[host]
		if !ok {
			return nil, nil, nil, fmt.Errorf("job %s scrapes service %s, which the test does not run: start it, or skip it with a reason", name, host)
		}
		jobs = append(jobs, Job{Name: name, Service: host, Addr: addr})
		out = append(out, map[string]any{
			"job_name":       name,
			"static_configs": []map[string]any{{"targets": []string{addr}}},
		})
	}
	iv := strconv.FormatInt(interval.Milliseconds(), 10) + "ms"
	config, err = yaml.Marshal(map[string]any{
		"global":         map[string]any{"scrape_interval": iv, "evaluation_interval": iv, "scrape_timeout": iv},
		"scrape_configs": out,
	})
	return config, jobs, skipped, err
}

// FreePort returns a TCP port of 127.0.0.1 nobody listens on.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeUDPPort returns a UDP port of 127.0.0.1 nobody listens on.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Process is a program started for a test (internal/proc: its own process
// group, killed if the test binary dies), stopped with SIGTERM (SIGKILL
// after 30 s) at cleanup; the end of its output is logged when the test
// fails.
type Process struct {
	Name string
	*proc.Proc
	log string
}

// StartProcess starts path with args in dir (empty: the current one).
func StartProcess(t testing.TB, name, dir, path string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	log := filepath.Join(t.TempDir(), name+".log")
	pr, err := proc.Start(cmd, log, nil)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Proc: pr, log: log}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s:\n%s", name, p.LogTail(60))
		}
	})
	return p
}

// LogPath is the file holding the process's output.
func (p *Process) LogPath() string { return p.log }

// Stop sends SIGTERM and waits, SIGKILL after 30 s; it reports whether
// the process ended by itself.
func (p *Process) Stop() bool {
	if !p.Running() {
		return true
	}
	return p.Proc.Stop(syscall.SIGTERM, 30*time.Second)
}

// WaitHTTP waits until url answers 200, failing the test after timeout or
// if p exits first.
func WaitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if !p.Running() {
			t.Fatalf("%s exited (%v) before %s answered\n%s", p.Name, p.Wait(), url, p.LogTail(30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s does not answer 200 after %s: %v", p.Name, url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Server is a running Prometheus.
type Server struct {
	URL  string // http://127.0.0.1:port
	Proc *Process
}

// Start runs Prometheus on config (YAML) listening on addr, with its
// storage in a temporary directory, and waits until it is ready.
func Start(t testing.TB, binary, addr string, config []byte) *Server {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, config, 0o644); err != nil {
		t.Fatal(err)
	}
	p := StartProcess(t, "prometheus", dir, binary,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	s := &Server{URL: "http://" + addr, Proc: p}
	WaitHTTP(t, p, s.URL+"/-/ready", time.Minute)
	return s
}

// Sample is one series of an instant vector.
type Sample struct {
	Metric map[string]string
	Value  float64
}

func (s *Server) get(ctx context.Context, path string, q url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: %s: %w", path, bytes.TrimSpace(body), err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// Query evaluates expr now (/api/v1/query). A result that is not an
// instant vector is an error: every panel query is one.
func (s *Server) Query(ctx context.Context, expr string) ([]Sample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s returned a %s, want a vector", expr, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		str, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", expr, r.Value[1], err)
		}
		out = append(out, Sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// Target is one active scrape target's state.
type Target struct {
	Job       string
	ScrapeURL string
	Health    string // "up", "down" or "unknown"
	LastError string
}

// Targets lists the active targets (/api/v1/targets).
func (s *Server) Targets(ctx context.Context) ([]Target, error) {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			ScrapeURL string            `json:"scrapeUrl"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := s.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return nil, err
	}
	var out []Target
	for _, a := range data.ActiveTargets {
		out = append(out, Target{Job: a.Labels["job"], ScrapeURL: a.ScrapeURL, Health: a.Health, LastError: a.LastError})
	}
	return out, nil
}

// ErrNoValue is what Scalar returns for an empty result or NaN.
var ErrNoValue = errors.New("no value")

// Scalar evaluates expr, which must return one series, and returns its
// value.
func (s *Server) Scalar(ctx context.Context, expr string) (float64, error) {
	res, err := s.Query(ctx, expr)
	if err != nil {
		return 0, err
	}
	if len(res) != 1 || math.IsNaN(res[0].Value) {
		return 0, fmt.Errorf("%s: %w (%d series: %v)", expr, ErrNoValue, len(res), res)
	}
	return res[0].Value, nil
}
