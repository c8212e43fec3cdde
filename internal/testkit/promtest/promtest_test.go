package promtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMergeScrapeConfigs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yml", "global:\n  scrape_interval: 10s\nscrape_configs:\n  - job_name: inserter\n    static_configs:\n      - targets: [\"inserter:8081\"]\n  - job_name: clickhouse\n    static_configs:\n      - targets: [\"clickhouse:9363\"]\n")
	b := write("b.yml", "scrape_configs:\n  - job_name: inserter\n    static_configs:\n      - targets: [\"inserter:8081\"]\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"localhost:9090\"]\n")
	conflict := write("c.yml", "scrape_configs:\n  - job_name: inserter\n    static_configs:\n      - targets: [\"inserter:9999\"]\n")
	extra := write("d.yml", "scrape_configs:\n  - job_name: inserter\n    metrics_path: /other\n    static_configs:\n      - targets: [\"inserter:8081\"]\n")
	addrs := map[string]string{"inserter": "127.0.0.1:1", "localhost": "127.0.0.1:2"}
	skip := map[string]string{"clickhouse": "not run"}

	cfg, jobs, skipped, err := MergeScrapeConfigs([]string{a, b}, addrs, skip, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := "global:\n    evaluation_interval: 1500ms\n    scrape_interval: 1500ms\n    scrape_timeout: 1500ms\nscrape_configs:\n    - job_name: inserter\n      static_configs:\n        - targets:\n            - 127.0.0.1:1\n    - job_name: prometheus\n      static_configs:\n        - targets:\n            - 127.0.0.1:2\n"
	if string(cfg) != want {
		t.Errorf("config:\n%s\nwant:\n%s", cfg, want)
	}
	if len(jobs) != 2 || jobs[0] != (Job{"inserter", "inserter", "127.0.0.1:1"}) || jobs[1] != (Job{"prometheus", "localhost", "127.0.0.1:2"}) {
		t.Errorf("jobs %+v", jobs)
	}
	if len(skipped) != 1 || skipped[0] != (Job{"clickhouse", "clickhouse", "not run"}) {
		t.Errorf("skipped %+v", skipped)
	}

	// A skipped service may be scraped differently per stack (the cluster's
	// ClickHouse nodes): listed once, under the first file's targets.
	cluster := write("e.yml", "scrape_configs:\n  - job_name: clickhouse\n    static_configs:\n      - targets: [\"ch-1:9363\", \"ch-2:9363\"]\n")
	_, _, skipped, err = MergeScrapeConfigs([]string{cluster, a}, addrs, map[string]string{"clickhouse": "not run", "ch-1": "not run", "ch-2": "not run"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 || skipped[0] != (Job{"clickhouse", "ch-1,ch-2", "not run"}) {
		t.Errorf("cluster: skipped %+v", skipped)
	}

	for _, c := range []struct {
		name  string
		files []string
		addrs map[string]string
		want  string
	}{
		{"same job, other target", []string{a, conflict}, addrs, "one name, one target"},
		{"service not run", []string{b}, map[string]string{"inserter": "127.0.0.1:1"}, "service localhost, which the test does not run"},
		{"setting not carried over", []string{extra}, addrs, "sets metrics_path"},
	} {
		if _, _, _, err := MergeScrapeConfigs(c.files, c.addrs, skip, time.Second); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}
