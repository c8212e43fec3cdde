package compose

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	flowcli "github.com/spendletonliveaction/flow-pipeline/internal/cli"
)

// stacks lists each compose file with the services it must define, so a
// service dropped by mistake fails here rather than in a user's terminal.
var stacks = []struct {
	file     string
	services []string
	sink     string // "postgres" or "clickhouse"
	source   string // "mocker" or "goflow2"
	cluster  bool   // the cluster stack: kafka and clickhouse are the nodes below
}{
	{"docker-compose-postgres-mock.yml", []string{"kafka", "kafka-init", "enricher", "detector", "mocker", "postgres", "inserter", "prometheus", "grafana"}, "postgres", "mocker", false},
	{"docker-compose-postgres-collect.yml", []string{"kafka", "kafka-init", "enricher", "detector", "goflow2", "postgres", "inserter", "prometheus", "grafana"}, "postgres", "goflow2", false},
	{"docker-compose-clickhouse-mock.yml", []string{"kafka", "kafka-init", "enricher", "detector", "mocker", "clickhouse", "prometheus", "grafana"}, "clickhouse", "mocker", false},
	{"docker-compose-clickhouse-collect.yml", []string{"kafka", "kafka-init", "enricher", "detector", "goflow2", "clickhouse", "prometheus", "grafana"}, "clickhouse", "goflow2", false},
	{"docker-compose-clickhouse-cluster.yml", append(append(append([]string{"kafka-init", "enricher", "detector", "mocker", "prometheus", "grafana"},
		clusterBrokers...), clusterKeepers...), clusterClickHouse...), "clickhouse", "mocker", true},
}

// The nodes of the cluster stack.
var (
	clusterBrokers    = []string{"kafka1", "kafka2", "kafka3"}
	clusterKeepers    = []string{"keeper1", "keeper2", "keeper3"}
	clusterClickHouse = []string{"clickhouse-s1r1", "clickhouse-s1r2", "clickhouse-s2r1", "clickhouse-s2r2"}
)

// kafkaServices and sinkServices name a stack's brokers and its store's
// servers: one each, or the cluster's nodes.
func kafkaServices(cluster bool) []string {
	if cluster {
		return clusterBrokers
	}
	return []string{"kafka"}
}

func sinkServices(sink string, cluster bool) []string {
	if cluster {
		return clusterClickHouse
	}
	return []string{sink}
}

// repoRoot is the repository's top level, one up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// load reads a compose file the way `docker compose -f FILE` run from this
// folder does: with compose/.env, and without the caller's environment so
// the result does not depend on the shell the test runs in. Services of
// the profiles named are enabled, as with `docker compose --profile`.
func load(t testing.TB, file string, profiles ...string) *types.Project {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, file)},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(filepath.Join(dir, ".env")),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatalf("%s: compose options: %v", file, err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("%s does not load with compose-go: %v", file, err)
	}
	return p
}

func TestStacksLoad(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			got := p.ServiceNames()
			want := slices.Clone(st.services)
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("services = %v, want %v", got, want)
			}
			if p.Name != "flow-pipeline" {
				t.Errorf("project name = %q, want flow-pipeline (from .env)", p.Name)
			}
		})
	}
}

// imageRef splits an image reference into repository and tag; the tag is
// empty when the reference has none.
func imageRef(image string) (repo, tag string) {
	ref := image
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		return ref[:colon], ref[colon+1:]
	}
	return ref, ""
}

func TestImageRef(t *testing.T) {
	for _, tc := range []struct{ in, repo, tag string }{
		{"apache/kafka:4.1.1", "apache/kafka", "4.1.1"},
		{"postgres", "postgres", ""},
		{"localhost:5000/x/y", "localhost:5000/x/y", ""},
		{"localhost:5000/x/y:1.2", "localhost:5000/x/y", "1.2"},
		{"gcr.io/distroless/static-debian12:nonroot@sha256:abc", "gcr.io/distroless/static-debian12", "nonroot"},
	} {
		repo, tag := imageRef(tc.in)
		if repo != tc.repo || tag != tc.tag {
			t.Errorf("imageRef(%q) = %q, %q; want %q, %q", tc.in, repo, tag, tc.repo, tc.tag)
		}
	}
}

// pinnedTag reports why tag is not a pinned published version, or "".
// A pinned tag names a version: it holds a digit and is not a moving name.
func pinnedTag(tag string) string {
	switch {
	case tag == "":
		return "has no tag (means latest)"
	case tag == "latest" || strings.HasPrefix(tag, "latest-") || tag == "head" || strings.HasPrefix(tag, "head-"):
		return "uses the moving tag " + tag
	case !strings.ContainsAny(tag, "0123456789"):
		return "tag " + tag + " names no version"
	}
	return ""
}

func TestImagesPinned(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			for name, svc := range p.Services {
				if svc.Build != nil {
					// Ours: built from the top-level Dockerfile, one target
					// per binary.
					if svc.Build.Target != name {
						t.Errorf("service %s: build target = %q, want %q", name, svc.Build.Target, name)
					}
					df := svc.Build.Dockerfile
					if !filepath.IsAbs(df) {
						df = filepath.Join(svc.Build.Context, df)
					}
					if _, err := os.Stat(df); err != nil {
						t.Errorf("service %s: Dockerfile: %v", name, err)
					}
					if filepath.Clean(svc.Build.Context) != repoRoot(t) {
						t.Errorf("service %s: build context = %s, want the repository top level", name, svc.Build.Context)
					}
					continue
				}
				if svc.Image == "" {
					t.Errorf("service %s: no image and no build", name)
					continue
				}
				if _, tag := imageRef(svc.Image); pinnedTag(tag) != "" {
					t.Errorf("service %s: image %s %s", name, svc.Image, pinnedTag(tag))
				}
			}
		})
	}
}

// TestImagesSameAcrossStacks keeps one version of each image everywhere, so
// switching stacks never pulls a second Kafka or Grafana.
func TestImagesSameAcrossStacks(t *testing.T) {
	seen := map[string]string{} // repository -> "image (file)"
	for _, st := range stacks {
		p := load(t, st.file)
		for _, svc := range p.Services {
			if svc.Image == "" || svc.Build != nil {
				continue
			}
			repo, _ := imageRef(svc.Image)
			if prev, ok := seen[repo]; ok && !strings.HasPrefix(prev, svc.Image+" ") {
				t.Errorf("%s uses %s but %s", st.file, svc.Image, prev)
			}
			seen[repo] = svc.Image + " (" + st.file + ")"
		}
	}
}

func TestBindMountsExist(t *testing.T) {
	root := repoRoot(t)
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			binds := 0
			for name, svc := range p.Services {
				for _, v := range svc.Volumes {
					if v.Type != types.VolumeTypeBind {
						continue
					}
					binds++
					rel, err := filepath.Rel(root, v.Source)
					if err != nil || strings.HasPrefix(rel, "..") {
						t.Errorf("service %s: bind source %s is outside the repository", name, v.Source)
						continue
					}
					if _, err := os.Stat(v.Source); err != nil {
						t.Errorf("service %s: bind-mounted %s (-> %s) does not exist: %v", name, rel, v.Target, err)
					}
					if !v.ReadOnly {
						t.Errorf("service %s: bind mount %s should be read-only (:ro)", name, rel)
					}
				}
			}
			if binds == 0 {
				t.Fatal("no bind mounts found: the checks above ran on nothing")
			}
		})
	}
}

// wantHealth lists the services that must carry a health check in every
// stack where they appear: Kafka and the databases order the start-up, and
// the rest make `up --wait` mean "ready".
var wantHealth = append(append(append([]string{"kafka", "postgres", "clickhouse", "prometheus", "grafana", "goflow2", "enricher", "mocker"},
	clusterBrokers...), clusterKeepers...), clusterClickHouse...)

func TestHealthChecks(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			for _, name := range wantHealth {
				svc, ok := p.Services[name]
				if !ok {
					continue
				}
				hc := svc.HealthCheck
				if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
					t.Errorf("service %s has no health check", name)
					continue
				}
				if hc.Interval == nil || hc.Retries == nil || hc.StartPeriod == nil {
					t.Errorf("service %s: health check should set interval, retries and start_period", name)
				}
			}
			for _, name := range append(kafkaServices(st.cluster), sinkServices(st.sink, st.cluster)...) {
				if _, ok := p.Services[name]; !ok {
					t.Errorf("stack has no %s service", name)
				}
			}
		})
	}
}

func TestStartupOrder(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			for name, svc := range p.Services {
				for dep, d := range svc.DependsOn {
					target, ok := p.Services[dep]
					if !ok {
						t.Errorf("%s depends on unknown service %s", name, dep)
						continue
					}
					switch d.Condition {
					case types.ServiceConditionHealthy:
						if target.HealthCheck == nil || len(target.HealthCheck.Test) == 0 {
							t.Errorf("%s waits for %s to be healthy, but %s has no health check", name, dep, dep)
						}
					case types.ServiceConditionCompletedSuccessfully:
						if target.Restart != "no" && target.Restart != "" {
							t.Errorf("%s waits for one-shot %s, whose restart is %q", name, dep, target.Restart)
						}
					default:
						t.Errorf("%s depends on %s with condition %q; want service_healthy or service_completed_successfully", name, dep, d.Condition)
					}
				}
			}
			// Whatever talks to Kafka starts after the topic exists.
			consumers := append([]string{st.source, "enricher", "detector"}, sinkServices(st.sink, st.cluster)...)
			if st.sink == "postgres" {
				consumers = []string{st.source, "enricher", "detector", "inserter"}
			}
			for _, name := range consumers {
				d, ok := p.Services[name].DependsOn["kafka-init"]
				if !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
					t.Errorf("%s must depend on kafka-init with condition service_completed_successfully", name)
				}
			}
			init := p.Services["kafka-init"]
			args := strings.Join(append(slices.Clone([]string(init.Entrypoint)), init.Command...), " ")
			for _, want := range []string{"kafka-topics.sh", "--create", "--if-not-exists"} {
				if !strings.Contains(args, want) {
					t.Errorf("kafka-init runs %q, which lacks %q", args, want)
				}
			}
			// Each topic the stack uses, with its partitions: flows-enriched
			// as many as flows, so each input partition keeps its order.
			topics := map[string]string{}
			for _, m := range topicRe.FindAllStringSubmatch(args, -1) {
				topics[m[1]] = m[2]
			}
			// The cluster's: a multiple of its 4 ClickHouse nodes, so that
			// each node reads as many partitions.
			partitions := "6"
			if st.cluster {
				partitions = "12"
			}
			if want := map[string]string{"flows": partitions, "flows-enriched": partitions, "flows-dlq": "1", "alerts": "1"}; !maps.Equal(topics, want) {
				t.Errorf("kafka-init creates topics (name: partitions) %v, want %v", topics, want)
			}
			for _, kafka := range kafkaServices(st.cluster) {
				if d := init.DependsOn[kafka]; d.Condition != types.ServiceConditionHealthy {
					t.Errorf("kafka-init must wait for %s to be healthy, has %+v", kafka, d)
				}
			}
		})
	}
}

var topicRe = regexp.MustCompile(`--topic (\S+) --partitions (\S+)`)

var sleepRe = regexp.MustCompile(`\bsleep\b`)

func TestNoSleep(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			raw, err := os.ReadFile(st.file)
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(string(raw), "\n") {
				if code, _, _ := strings.Cut(line, "#"); sleepRe.MatchString(code) {
					t.Errorf("%s:%d: %q: order start-up with health checks, not sleep", st.file, i+1, strings.TrimSpace(line))
				}
			}
			p := load(t, st.file)
			for name, svc := range p.Services {
				all := append(append(slices.Clone([]string(svc.Entrypoint)), svc.Command...), healthTest(svc)...)
				if sleepRe.MatchString(strings.Join(all, " ")) {
					t.Errorf("service %s runs sleep", name)
				}
			}
		})
	}
}

func healthTest(svc types.ServiceConfig) []string {
	if svc.HealthCheck == nil {
		return nil
	}
	return svc.HealthCheck.Test
}

func TestPortsBindLoopback(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			var udp []uint32
			for name, svc := range p.Services {
				for _, port := range svc.Ports {
					if port.Protocol == "udp" {
						// The collector's ports: routers must reach them.
						if name != "goflow2" {
							t.Errorf("service %s publishes UDP %d; only the collector should", name, port.Target)
						}
						udp = append(udp, port.Target)
						continue
					}
					if port.HostIP != "127.0.0.1" {
						t.Errorf("service %s publishes %d/%s on %q; want 127.0.0.1 by default", name, port.Target, port.Protocol, port.HostIP)
					}
				}
			}
			slices.Sort(udp)
			var want []uint32
			if st.source == "goflow2" {
				want = []uint32{2055, 6343}
			}
			if !slices.Equal(udp, want) {
				t.Errorf("UDP ports = %v, want %v (sFlow 6343, NetFlow/IPFIX 2055)", udp, want)
			}
			if g, ok := p.Services["grafana"]; !ok || len(g.Ports) != 1 || g.Ports[0].Published != "3000" {
				t.Errorf("grafana must be published on port 3000, has %+v", g.Ports)
			}
		})
	}
}

var varRe = regexp.MustCompile(`\$\{([A-Z0-9_]+)(:?-[^}]*)?\}`)

// TestCredentialsFromEnv checks that no secret is written into a compose
// file and that every variable the files use is documented in .env.
func TestCredentialsFromEnv(t *testing.T) {
	env, err := os.ReadFile(".env")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(strings.TrimSpace(k), "#") {
			documented[strings.TrimSpace(k)] = true
		}
	}
	for _, key := range []string{"GRAFANA_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD"} {
		if !documented[key] {
			t.Errorf(".env does not set %s", key)
		}
	}
	secretKey := regexp.MustCompile(`(?i)^\s*-?\s*[A-Z_]*(PASSWORD|PASS|SECRET)[A-Z_]*\s*[:=]\s*(.*)$`)
	files := []string{"services.yml"}
	for _, st := range stacks {
		files = append(files, st.file)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range varRe.FindAllStringSubmatch(string(raw), -1) {
			if !documented[m[1]] {
				t.Errorf("%s uses ${%s}, which .env does not document", file, m[1])
			}
		}
		for i, line := range strings.Split(string(raw), "\n") {
			m := secretKey.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if v := strings.TrimSpace(m[2]); v != "" && !strings.HasPrefix(v, "${") {
				t.Errorf("%s:%d: secret written in the file (%s); take it from .env", file, i+1, strings.TrimSpace(line))
			}
		}
	}
}

// binaries builds our commands once per test binary.
var binaries struct {
	sync.Once
	dir string
	err error
}

func buildBinary(t *testing.T, name string) string {
	t.Helper()
	binaries.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "flowpipeline-compose-")
		if binaries.err != nil {
			return
		}
		for _, cmd := range []string{"mocker", "inserter", "demo", "enricher", "detector"} {
			c := exec.Command("go", "build", "-o", filepath.Join(binaries.dir, cmd), "./cmd/"+cmd)
			c.Dir = repoRoot(t)
			if out, err := c.CombinedOutput(); err != nil {
				binaries.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if binaries.err != nil {
		t.Fatalf("building our binaries: %v", binaries.err)
	}
	return filepath.Join(binaries.dir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaries.dir != "" {
		os.RemoveAll(binaries.dir)
	}
	os.Exit(code)
}

var usageFlagRe = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9._-]*)`)

// acceptedFlags runs `bin -h` and returns the flags its usage lists.
func acceptedFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits 0 or 2 depending on the flag set
	flags := map[string]bool{}
	for _, m := range usageFlagRe.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 3 {
		t.Fatalf("%s -h listed %d flags; cannot check commands against it:\n%s", bin, len(flags), out)
	}
	return flags
}

// flagNames returns the flag names in a command line ("-a=b", "-c d", "--e").
func flagNames(args []string) []string {
	var names []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		names = append(names, name)
	}
	return names
}

// extraEnv lists environment variables our binaries read that are not
// spelled like a flag.
var extraEnv = map[string][]string{
	"inserter": {"POSTGRES_PASSWORD"},
}

func TestOurCommandsFlags(t *testing.T) {
	checked := 0
	for _, st := range stacks {
		p := load(t, st.file)
		for _, name := range []string{"mocker", "inserter", "enricher", "detector"} {
			svc, ok := p.Services[name]
			if !ok {
				continue
			}
			t.Run(st.file+"/"+name, func(t *testing.T) {
				bin := buildBinary(t, name)
				accepted := acceptedFlags(t, bin)
				args := []string(svc.Command)
				if len(args) == 0 {
					t.Fatal("no command: the service would run with built-in defaults that point at localhost")
				}
				for _, f := range flagNames(args) {
					checked++
					if !accepted[f] {
						t.Errorf("command flag -%s is not accepted by %s (accepted: %v)", f, name, keys(accepted))
					}
				}
				for k := range svc.Environment {
					ok := slices.Contains(extraEnv[name], k)
					for f := range accepted {
						ok = ok || flowcli.EnvName(f) == k
					}
					if !ok {
						t.Errorf("environment variable %s matches no flag of %s", k, name)
					}
				}
				// The image has no shell: the health check must run the
				// binary's own -probe against the port it serves.
				want := []string{"CMD", "/usr/local/bin/" + name, "-probe", "http://127.0.0.1:" + metricsPort(svc) + "/readyz"}
				if got := healthTest(svc); !slices.Equal(got, want) {
					t.Errorf("health check %q, want %q", got, want)
				}
				if !accepted["probe"] {
					t.Errorf("%s has no -probe flag for its health check", name)
				}
				// Values too: parse the real command line, then stop at -h.
				out, _ := exec.Command(bin, append(slices.Clone(args), "-h")...).CombinedOutput()
				for _, bad := range []string{"flag provided but not defined", "invalid value", "invalid boolean"} {
					if strings.Contains(string(out), bad) {
						t.Errorf("%s rejects its compose command %q:\n%s", name, args, out)
					}
				}
			})
		}
	}
	if checked == 0 {
		t.Fatal("no flag was checked")
	}
}

// goflow2Flags are the flags of netsampler/goflow2 v2.2.6 that the collect
// stacks use, from cmd/goflow2/main.go and transport/kafka/kafka.go at that
// tag. The image is pinned to v2.2.6, so this list moves with the pin.
var goflow2Flags = map[string]bool{
	"listen": true, "transport": true, "format": true, "addr": true, "produce": true,
	"loglevel": true, "logfmt": true, "mapping": true, "templates.path": true,
	"transport.kafka.brokers": true, "transport.kafka.topic": true, "transport.kafka.version": true,
	"transport.kafka.hashing": true, "transport.kafka.compression": true,
	"transport.kafka.flushbytes": true, "transport.kafka.flushfreq": true, "transport.kafka.maxmsgbytes": true,
}

func TestGoflow2Command(t *testing.T) {
	for _, st := range stacks {
		if st.source != "goflow2" {
			continue
		}
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			svc := p.Services["goflow2"]
			if svc.Image != "netsampler/goflow2:v2.2.6" {
				t.Errorf("goflow2 image = %s; the flag list here is for v2.2.6", svc.Image)
			}
			got := map[string]string{}
			for _, a := range svc.Command {
				name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !goflow2Flags[name] {
					t.Errorf("goflow2 v2.2.6 has no flag -%s", name)
				}
				got[name] = value
			}
			want := map[string]string{
				"transport":               "kafka",
				"format":                  "bin",
				"transport.kafka.brokers": "kafka:9092",
				"transport.kafka.topic":   "flows",
				"listen":                  "sflow://:6343,netflow://:2055",
				"addr":                    ":8080",
				// bench-collect's stackGoflow2Flags (internal/testkit/e2e):
				// goflow2's own 5 s made p99 latency 6.5 s at 20,000 flows/s.
				"transport.kafka.flushfreq": "100ms",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("goflow2 -%s=%q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// metricsPort returns the port a service serves /metrics on, from its
// command line.
func metricsPort(svc types.ServiceConfig) string {
	for _, a := range svc.Command {
		for _, prefix := range []string{"-metrics.addr=", "-addr="} {
			if v, ok := strings.CutPrefix(a, prefix); ok {
				_, port, _ := strings.Cut(v, ":")
				return port
			}
		}
	}
	return ""
}

// TestPrometheusTargets checks that each stack's Prometheus scrapes every
// stage of that stack, at the port the service really serves metrics on.
func TestPrometheusTargets(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			var cfgPath string
			for _, v := range p.Services["prometheus"].Volumes {
				if v.Target == "/etc/prometheus/prometheus.yml" {
					cfgPath = v.Source
				}
			}
			raw, err := os.ReadFile(cfgPath)
			if err != nil {
				t.Fatalf("prometheus config: %v", err)
			}
			var cfg struct {
				ScrapeConfigs []struct {
					JobName       string `yaml:"job_name"`
					StaticConfigs []struct {
						Targets []string `yaml:"targets"`
					} `yaml:"static_configs"`
				} `yaml:"scrape_configs"`
			}
			if err := yaml.Unmarshal(raw, &cfg); err != nil {
				t.Fatalf("%s: %v", cfgPath, err)
			}
			scraped := map[string]string{}
			for _, sc := range cfg.ScrapeConfigs {
				for _, s := range sc.StaticConfigs {
					for _, target := range s.Targets {
						host, port, _ := strings.Cut(target, ":")
						scraped[host] = port
						if host == "localhost" {
							continue
						}
						if _, ok := p.Services[host]; !ok {
							t.Errorf("job %s scrapes %s, which is not a service of this stack", sc.JobName, target)
						}
					}
				}
			}
			want := map[string]string{st.source: metricsPort(p.Services[st.source]), "enricher": metricsPort(p.Services["enricher"]),
				"detector": metricsPort(p.Services["detector"])}
			if st.sink == "postgres" {
				want["inserter"] = metricsPort(p.Services["inserter"])
			} else {
				for _, ch := range sinkServices(st.sink, st.cluster) {
					want[ch] = "9363" // compose/prometheus/clickhouse-metrics.xml
				}
			}
			for host, port := range want {
				if port == "" {
					t.Errorf("%s has no metrics address in its command", host)
				}
				if scraped[host] != port {
					t.Errorf("prometheus scrapes %s on port %q, want %q", host, scraped[host], port)
				}
			}
		})
	}
}

// TestGrafanaWiring checks that each stack mounts the datasources its
// dashboards use, and the ClickHouse plugin where it is needed.
func TestGrafanaWiring(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			g := p.Services["grafana"]
			uids := map[string]bool{}
			var dashboards []string
			for _, v := range g.Volumes {
				switch {
				case strings.HasPrefix(v.Target, "/etc/grafana/provisioning/datasources/"):
					raw, err := os.ReadFile(v.Source)
					if err != nil {
						t.Fatal(err)
					}
					var ds struct {
						Datasources []struct {
							UID string `yaml:"uid"`
						} `yaml:"datasources"`
					}
					if err := yaml.Unmarshal(raw, &ds); err != nil {
						t.Fatalf("%s: %v", v.Source, err)
					}
					for _, d := range ds.Datasources {
						uids[d.UID] = true
					}
				case strings.HasPrefix(v.Target, "/etc/grafana/dashboards/"):
					dashboards = append(dashboards, v.Source)
				}
			}
			wantTraffic := "traffic-" + st.sink + ".json"
			names := []string{}
			for _, d := range dashboards {
				names = append(names, filepath.Base(d))
			}
			sort.Strings(names)
			if want := []string{"pipeline.json", wantTraffic}; !slices.Equal(names, want) {
				t.Errorf("dashboards mounted = %v, want %v", names, want)
			}
			for _, d := range dashboards {
				raw, err := os.ReadFile(d)
				if err != nil {
					t.Fatal(err)
				}
				var dash any
				if err := json.Unmarshal(raw, &dash); err != nil {
					t.Fatalf("%s: %v", d, err)
				}
				for _, uid := range datasourceUIDs(dash) {
					if !uids[uid] {
						t.Errorf("%s uses datasource %q, which this stack does not provision (has %v)", filepath.Base(d), uid, keys(uids))
					}
				}
			}
			plugin := g.Environment["GF_PLUGINS_PREINSTALL_SYNC"]
			// Pinned like the images: plugin-id@version.
			if st.sink == "clickhouse" && (plugin == nil || !regexp.MustCompile(`^grafana-clickhouse-datasource@\d+\.\d+\.\d+$`).MatchString(*plugin)) {
				t.Error("grafana must install a pinned grafana-clickhouse-datasource@X.Y.Z at start (GF_PLUGINS_PREINSTALL_SYNC)")
			}
		})
	}
}

// datasourceUIDs collects every "datasource": {"uid": ...} in a dashboard.
func datasourceUIDs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "datasource" {
				if m, ok := e.(map[string]any); ok {
					if uid, ok := m["uid"].(string); ok && !strings.HasPrefix(uid, "$") && !strings.HasPrefix(uid, "-- ") {
						out = append(out, uid)
					}
				}
			}
			out = append(out, datasourceUIDs(e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, datasourceUIDs(e)...)
		}
	}
	return out
}

// TestClickHouseMounts checks the wire contract reaches ClickHouse from the
// one copy in pb/, and that the init SQL is the folder the ClickHouse
// package owns.
func TestClickHouseMounts(t *testing.T) {
	root := repoRoot(t)
	for _, st := range stacks {
		if st.sink != "clickhouse" {
			continue
		}
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			// The cluster's schema is derived from compose/clickhouse
			// (compose/clickhouse, TestClusterSchemaUpToDate).
			initdb := filepath.Join(root, "compose", "clickhouse")
			if st.cluster {
				initdb = filepath.Join(root, "compose", "clickhouse-cluster", "sql")
			}
			for _, ch := range sinkServices(st.sink, st.cluster) {
				want := map[string]string{
					"/var/lib/clickhouse/format_schemas/flow.proto": filepath.Join(root, "pb", "flow.proto"),
					"/docker-entrypoint-initdb.d":                   initdb,
				}
				for _, v := range p.Services[ch].Volumes {
					if src, ok := want[v.Target]; ok {
						if v.Source != src {
							t.Errorf("%s: %s mounted from %s, want %s", ch, v.Target, v.Source, src)
						}
						delete(want, v.Target)
					}
				}
				for target := range want {
					t.Errorf("%s does not mount %s", ch, target)
				}
			}
		})
	}
}

// flagDefault reads a flag's default from `bin -h` (cli.SetUsage prints
// `-name  (env NAME, default "value")`); ok is false if bin has no such flag.
func flagDefault(t *testing.T, bin, name string) (string, bool) {
	t.Helper()
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	re := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `\s+\(env \w+, default "([^"]*)"\)`)
	m := re.FindSubmatch(out)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

// flagValue returns the value of -name in a compose command ("-name=v" or
// "-name v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = "-" + strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v, true
		}
		if a == "-"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// TestStopGracePeriod: docker stop sends SIGTERM, then SIGKILL after the
// service's stop_grace_period (10 s if unset). Each of our binaries with a
// -shutdown.timeout needs a grace period longer than it, or its final
// flush is cut short.
func TestStopGracePeriod(t *testing.T) {
	checked := 0
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			for name, svc := range p.Services {
				if svc.Build == nil {
					continue // not ours
				}
				bin := buildBinary(t, name)
				timeout, ok := flagValue(svc.Command, "shutdown.timeout")
				if !ok {
					if timeout, ok = flagDefault(t, bin, "shutdown.timeout"); !ok {
						t.Errorf("%s has no -shutdown.timeout flag", name)
						continue
					}
				}
				d, err := time.ParseDuration(timeout)
				if err != nil {
					t.Errorf("%s: -shutdown.timeout %q: %v", name, timeout, err)
					continue
				}
				if svc.StopGracePeriod == nil {
					t.Errorf("%s sets no stop_grace_period: docker's 10 s default would cut its %s shutdown", name, d)
					continue
				}
				if grace := time.Duration(*svc.StopGracePeriod); grace <= d {
					t.Errorf("%s: stop_grace_period %s is not longer than -shutdown.timeout %s", name, grace, d)
				}
				checked++
			}
		})
	}
	if checked != 15 {
		t.Errorf("checked %d services, want the enricher and the detector of every stack, the inserter of two and the mocker of three (15)", checked)
	}
}

// TestInserterGroupIsDefault: the compose files use the inserter's default
// consumer group, so running the binary by hand against a compose database
// continues the same offsets instead of being refused as a second group.
func TestInserterGroupIsDefault(t *testing.T) {
	def, ok := flagDefault(t, buildBinary(t, "inserter"), "kafka.group")
	if !ok {
		t.Fatal("inserter -h shows no default for -kafka.group")
	}
	for _, st := range stacks {
		p := load(t, st.file)
		svc, ok := p.Services["inserter"]
		if !ok {
			continue
		}
		if g, set := flagValue(svc.Command, "kafka.group"); set && g != def {
			t.Errorf("%s: the inserter runs with -kafka.group=%s; the binary's default is %s", st.file, g, def)
		}
	}
}
