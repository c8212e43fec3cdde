package grafana

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/pcap"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/promtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// promQuery is one Prometheus query of the Pipeline dashboard.
type promQuery struct {
	panel, refID, expr string
}

func (q promQuery) String() string { return fmt.Sprintf("%q %s", q.panel, q.refID) }

func pipelineQueries(t *testing.T) []promQuery {
	t.Helper()
	var out []promQuery
	forEachTarget(readDashboard(t, "dashboards/pipeline.json").Panels, func(p panel, tg target) {
		if tg.Datasource != nil && tg.Datasource.Type == "prometheus" {
			out = append(out, promQuery{p.Title, tg.RefID, tg.Expr})
		}
	})
	if len(out) == 0 {
		t.Fatal("the Pipeline dashboard has no Prometheus query")
	}
	return out
}

// grafanaVar matches a Grafana variable in a query: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// expandGrafana substitutes the variables Grafana fills in before a query
// reaches Prometheus. With a 1 s scrape interval, $__rate_interval is
// Grafana's max($__interval + scrape interval, 4 × scrape interval); 5s
// holds at least four scrapes. An unknown variable is an error.
func expandGrafana(expr string) (string, error) {
	vars := map[string]string{"__rate_interval": "5s", "__interval": "1s", "__range": "1m"}
	var err error
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		name := grafanaVar.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			err = fmt.Errorf("query %q uses $%s, which the test does not substitute", expr, name)
			return m
		}
		return v
	})
	return out, err
}

func TestExpandGrafana(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"rate(x[$__rate_interval])", "rate(x[5s])"},
		{"rate(x[${__rate_interval}]) / $__interval", "rate(x[5s]) / 1s"},
		{`sum by (le) (y{a="$"})`, `sum by (le) (y{a="$"})`},
	} {
		got, err := expandGrafana(c.in)
		if err != nil || got != c.want {
			t.Errorf("expandGrafana(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := expandGrafana("rate(x[$window])"); err == nil {
		t.Error("expandGrafana accepted an unknown variable")
	}
}

// clickhouseOnly reports whether every metric expr selects is one the
// ClickHouse server exports (ClickHouse*); no test runs that server.
var metricName = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\{|\[)`)

func clickhouseOnly(expr string) bool {
	names := metricName.FindAllString(expr, -1)
	for _, n := range names {
		if !strings.HasPrefix(n, "ClickHouse") {
			return false
		}
	}
	return len(names) > 0
}

// buildCmds builds ./cmd/<name> for each name into a temporary directory.
func buildCmds(t *testing.T, root string, names ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for _, n := range names {
		path := filepath.Join(dir, n)
		cmd := exec.Command("go", "build", "-o", path, "./cmd/"+n)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/%s: %v\n%s", n, err, b)
		}
		out[n] = path
	}
	return out
}

func goflow2Binary(t *testing.T, root string) string {
	t.Helper()
	const version = "v2.2.6" // the Makefile's GOFLOW2_VERSION
	path := os.Getenv("FLOWPIPELINE_GOFLOW2")
	if path == "" {
		path = filepath.Join(root, ".cache", "bin", "goflow2-"+version)
	}
	if _, err := os.Stat(path); err != nil {
		testenv.Unavailable(t, "goflow2 %s is not built (%v): run `make goflow2`", version, err)
	}
	return path
}

// replayCaptures sends the router captures to goflow2 in rounds (NetFlow v9
// templates before their data, as a router would) until stop is called,
// which returns the number of rounds sent. Cleanup stops it too.
func replayCaptures(t *testing.T, root string, netflow, sflow int) (stop func() int) {
	t.Helper()
	files := []struct{ name, listener string }{
		{"netflow-nfv5.pcap", "netflow"},
		{"netflow-template.pcap", "netflow"},
		{"netflow-data.pcap", "netflow"},
		{"sflow-data-1140.pcap", "sflow"},
		{"sflow-data-icmpv6.pcap", "sflow"},
	}
	conns := map[string]net.Conn{}
	for listener, port := range map[string]int{"netflow": netflow, "sflow": sflow} {
		c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[listener] = c
	}
	var payloads [][]byte
	for _, f := range files {
		p, err := pcap.UDPPayload(filepath.Join(root, "internal", "testkit", "e2e", "testdata", f.name))
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, p)
	}
	var wg sync.WaitGroup
	rounds := 0
	done := make(chan struct{})
	stop = sync.OnceValue(func() int {
		close(done)
		wg.Wait()
		return rounds
	})
	t.Cleanup(func() { stop() })
	wg.Go(func() {
		for {
			for i, f := range files {
				if _, err := conns[f.listener].Write(payloads[i]); err != nil {
					t.Errorf("send %s to goflow2: %v", f.name, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			rounds++
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
	return stop
}

// mockerProduced reads the flows the mocker says Kafka acknowledged from
// its last log line (JSON, "mocker stopped").
func mockerProduced(t *testing.T, log string) int64 {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg      string `json:"msg"`
			Produced *int64 `json:"produced"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "mocker stopped" && line.Produced != nil {
			return *line.Produced
		}
	}
	t.Fatalf("the mocker's log %s has no \"mocker stopped\" line with the flows produced", log)
	return 0
}

// TestPipelineDashboardPromQL runs the real Prometheus on the compose
// stacks' scrape configurations, against the real mocker, goflow2 (fed the
// router captures), enricher and inserter on a real Kafka 4 broker and
// PostgreSQL, and executes every PromQL query of the Pipeline dashboard
// through Prometheus's HTTP API: each must return a value on this healthy
// pipeline. ClickHouse's queries are the exception: no test runs a
// ClickHouse server (chDB serves no metrics); they are listed as skipped.
// Then, with the sources stopped, the dashboard's flow counters must agree
// from stage to stage, and with PostgreSQL, exactly.
func TestPipelineDashboardPromQL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for about a minute")
	}
	root := promtest.RepoRoot(t)
	prometheus := promtest.Binary(t)
	goflow2 := goflow2Binary(t, root)
	kafka := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	bins := buildCmds(t, root, "mocker", "enricher", "inserter", "detector")

	name := testenv.UniqueName(t)
	flows, enriched, dlq, alerts := name+"-flows", name+"-enriched", name+"-dlq", name+"-alerts"
	kafka.CreateTopic(t, flows, 2)
	kafka.CreateTopic(t, enriched, 2)
	kafka.CreateTopic(t, dlq, 1)
	kafka.CreateTopic(t, alerts, 1)
	brokers := strings.Join(kafka.Brokers(), ",")

	addr := func() string { return "127.0.0.1:" + strconv.Itoa(promtest.FreePort(t)) }
	addrs := map[string]string{"mocker": addr(), "goflow2": addr(), "enricher": addr(), "inserter": addr(), "detector": addr(), "localhost": addr()}
	files, err := filepath.Glob(filepath.Join(root, "compose", "prometheus", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scrape configurations in compose/prometheus: %v", err)
	}
	config, jobs, skippedJobs, err := promtest.MergeScrapeConfigs(files, addrs,
		clickhouseServers("no ClickHouse server in the tests (chDB, the engine in-process, serves no metrics)"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range skippedJobs {
		t.Logf("SKIPPED scrape job %s (service %s): %s", j.Name, j.Service, j.Addr)
	}
	prom := promtest.Start(t, prometheus, addrs["localhost"], config)

	// The stages, as the compose stacks run them (compose/services.yml),
	// on the test's broker, database and addresses.
	ins := promtest.StartProcess(t, "inserter", root, bins["inserter"],
		"-kafka.brokers="+brokers, "-kafka.version="+kafka.Version(), "-kafka.topic="+enriched, "-kafka.group="+name+"-inserter",
		"-kafka.dlq="+dlq, "-postgres.dsn="+dsn, "-postgres.retention=7d", "-metrics.addr="+addrs["inserter"])
	enr := promtest.StartProcess(t, "enricher", root, bins["enricher"],
		"-kafka.brokers="+brokers, "-kafka.topic="+flows, "-kafka.out.topic="+enriched, "-kafka.group="+name+"-enricher",
		"-kafka.dlq="+dlq, "-kafka.transactional.id="+name, "-networks=config/demo-networks.yml",
		"-exporters=config/demo-exporters.yml", "-metrics.addr="+addrs["enricher"])
	netflow, sflow := promtest.FreeUDPPort(t), promtest.FreeUDPPort(t)
	gf := promtest.StartProcess(t, "goflow2", root, goflow2,
		fmt.Sprintf("-listen=sflow://127.0.0.1:%d,netflow://127.0.0.1:%d", sflow, netflow),
		"-transport=kafka", "-transport.kafka.brokers="+brokers, "-transport.kafka.topic="+flows,
		"-transport.kafka.flushfreq=100ms", "-format=bin", "-addr="+addrs["goflow2"], "-templates.path=/__templates")
	det := promtest.StartProcess(t, "detector", root, bins["detector"],
		"-kafka.brokers="+brokers, "-kafka.topic="+enriched, "-kafka.group="+name+"-detector",
		"-kafka.alerts.topic="+alerts, "-kafka.transactional.id="+name+"-detector", "-metrics.addr="+addrs["detector"])
	promtest.WaitHTTP(t, ins, "http://"+addrs["inserter"]+"/readyz", time.Minute)
	promtest.WaitHTTP(t, det, "http://"+addrs["detector"]+"/readyz", time.Minute)
	promtest.WaitHTTP(t, enr, "http://"+addrs["enricher"]+"/readyz", time.Minute)
	promtest.WaitHTTP(t, gf, "http://"+addrs["goflow2"]+"/__health", time.Minute)
	mock := promtest.StartProcess(t, "mocker", root, bins["mocker"],
		"-kafka.brokers="+brokers, "-kafka.version="+kafka.Version(), "-kafka.topic="+flows, "-rate=300",
		"-metrics.addr="+addrs["mocker"], "-log.format=json")
	stopReplay := replayCaptures(t, root, netflow, sflow)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Every query until each returns a value (series appear with the first
	// flows, rates with the second scrape).
	type result struct {
		expr    string
		samples []promtest.Sample
		err     error
	}
	pending := map[promQuery]*result{}
	var skipped []promQuery
	for _, q := range pipelineQueries(t) {
		expr, err := expandGrafana(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if clickhouseOnly(expr) {
			skipped = append(skipped, q)
			continue
		}
		pending[q] = &result{expr: expr}
	}
	for _, q := range skipped {
		t.Logf("SKIPPED %s: only ClickHouse's metrics, and no ClickHouse server runs in the tests: %s", q, q.expr)
	}
	checked := len(pending)
	deadline := time.Now().Add(90 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		for q, r := range pending {
			r.samples, r.err = prom.Query(ctx, r.expr)
			if r.err != nil {
				continue
			}
			for _, s := range r.samples {
				if !math.IsNaN(s.Value) {
					delete(pending, q)
					break
				}
			}
		}
	}
	for q, r := range pending {
		t.Errorf("%s returns no value on a healthy pipeline after 90s (%v, error %v): %s", q, r.samples, r.err, r.expr)
	}
	t.Logf("%d PromQL queries of the Pipeline dashboard return values; %d ClickHouse queries skipped", checked-len(pending), len(skipped))

	// Every scrape target of the stacks' files, but ClickHouse, is up.
	targets, err := prom.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up := map[string]bool{}
	for _, tg := range targets {
		up[tg.Job] = tg.Health == "up"
		if tg.Health != "up" {
			t.Errorf("scrape job %s (%s) is %s: %s", tg.Job, tg.ScrapeURL, tg.Health, tg.LastError)
		}
	}
	for _, j := range jobs {
		if _, ok := up[j.Name]; !ok {
			t.Errorf("scrape job %s has no active target", j.Name)
		}
	}

	// The new latency panel reads a plausible figure: flows are stored
	// within seconds here (1 s batches, 1 s enricher transactions).
	for _, q := range []float64{0.5, 0.99} {
		v, err := prom.Scalar(ctx, fmt.Sprintf("histogram_quantile(%g, sum by (le) (rate(flowpipeline_inserter_flow_latency_seconds_bucket[30s])))", q))
		if err != nil || v <= 0 || v > 30 {
			t.Errorf("flow latency p%g = %g s (%v), want between 0 and 30 s", q*100, v, err)
		}
	}
	if t.Failed() {
		return
	}

	// Conservation: stop the sources, let the pipeline drain, and compare
	// the counters behind the dashboard's flow lines. goflow2's line, with
	// rate() taken off, counts what goflow2 decoded; with the mocker's
	// acknowledged flows it is what the enricher read, committed and the
	// inserter stored: every row in PostgreSQL.
	rounds := stopReplay()
	mock.Stop()
	produced := mockerProduced(t, mock.LogPath())
	var goflow2Exprs []string
	for _, q := range pipelineQueries(t) {
		if strings.Contains(q.expr, "goflow2_flow_process_") {
			goflow2Exprs = append(goflow2Exprs, q.expr)
		}
	}
	if len(goflow2Exprs) != 1 {
		t.Fatalf("the Pipeline dashboard has %d queries of goflow2's decoded flows (goflow2_flow_process_*), want 1: %q", len(goflow2Exprs), goflow2Exprs)
	}
	goflow2Expr := goflow2Exprs[0]
	bare := regexp.MustCompile(`rate\(([^\[]+)\[\$__rate_interval\]\)`).ReplaceAllString(goflow2Expr, "$1")
	counters := []struct{ name, expr string }{
		{"goflow2 decoded", bare},
		{"enricher in", "sum(flowpipeline_enricher_flows_in_total)"},
		{"enricher out", "sum(flowpipeline_enricher_flows_out_total)"},
		{"inserter stored", "sum(flowpipeline_inserter_flows_stored_total)"},
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var got map[string]int64
	var rows int64
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		got = map[string]int64{}
		for _, c := range counters {
			v, err := prom.Scalar(ctx, c.expr)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got[c.name] = int64(v)
		}
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM flows").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		want := got["goflow2 decoded"] + produced
		if got["enricher in"] == want && got["enricher out"] == want && got["inserter stored"] == want && rows == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s the flow counters disagree: %v, mocker produced %d, PostgreSQL holds %d rows; "+
				"want goflow2 decoded + mocker produced = every other figure (goflow2 query without rate(): %s)", got, produced, rows, bare)
		}
	}
	t.Logf("flows: goflow2 decoded %d (%d rounds of the captures), mocker produced %d, stored %d", got["goflow2 decoded"], rounds, produced, rows)
	if got["goflow2 decoded"] == 0 || produced == 0 {
		t.Errorf("goflow2 decoded %d flows and the mocker produced %d: both sources must have sent", got["goflow2 decoded"], produced)
	}
}

// TestPrometheusVersionPinned: the Prometheus the tests build (Makefile,
// promtest.Version) is the release the compose stacks run: module
// v0.3XX.Y is release v3.XX.Y.
func TestPrometheusVersionPinned(t *testing.T) {
	root := promtest.RepoRoot(t)
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^PROMETHEUS_VERSION := (\S+)$`).FindSubmatch(makefile)
	if m == nil || string(m[1]) != promtest.Version {
		t.Fatalf("Makefile PROMETHEUS_VERSION is %q, promtest.Version %s: keep them equal", m, promtest.Version)
	}
	v := regexp.MustCompile(`^v0\.3(\d\d)\.(\d+)$`).FindStringSubmatch(promtest.Version)
	if v == nil {
		t.Fatalf("promtest.Version %s is not a 3.x module version (v0.3XX.Y)", promtest.Version)
	}
	image := "prom/prometheus:v3." + strings.TrimLeft(v[1], "0") + "." + v[2]
	services, err := os.ReadFile(filepath.Join(root, "compose", "services.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(services), "image: "+image+"\n") {
		t.Errorf("compose/services.yml does not run %s, the release of the Prometheus the tests build (%s): move both together", image, promtest.Version)
	}
}

// clickhouseServers maps every ClickHouse service of the stacks (the single
// server and the cluster's nodes) to the reason its scrape job is skipped.
func clickhouseServers(reason string) map[string]string {
	m := map[string]string{"clickhouse": reason}
	for _, n := range []string{"s1r1", "s1r2", "s2r1", "s2r2"} {
		m["clickhouse-"+n] = reason
	}
	return m
}
