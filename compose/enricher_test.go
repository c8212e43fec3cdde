package compose

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
)

// fetchScript is the one place the geodata versions are pinned.
const fetchScript = ".ci/geodata/fetch.sh"

// geodataPins reads the version and the packages fetch.sh pins.
func geodataPins(t *testing.T) (version string, packages []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), fetchScript))
	if err != nil {
		t.Fatal(err)
	}
	v := regexp.MustCompile(`(?m)^version=(\S+)$`).FindSubmatch(raw)
	p := regexp.MustCompile(`(?m)^packages=\(([^)]*)\)$`).FindSubmatch(raw)
	if v == nil || p == nil {
		t.Fatalf("%s: no version=... or packages=(...) line", fetchScript)
	}
	return string(v[1]), strings.Fields(string(p[1]))
}

// imageGeodata is where the enricher image holds the fetched packages.
const imageGeodata = "/usr/share/flow-pipeline/geodata"

// TestDockerfileGeodata: the enricher image's data come from fetch.sh
// itself (so the image, `make geodata` and the tests use one version),
// fetched strictly, and copied to where the compose command reads them.
func TestDockerfileGeodata(t *testing.T) {
	root := repoRoot(t)
	version, packages := geodataPins(t)
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// A version of ip-location-db written in the Dockerfile itself would
	// drift from the script's.
	for _, m := range regexp.MustCompile(`\b\d+\.\d+\.\d{10}\b|ip-location-db/[a-z-]+@\S+`).FindAllString(string(raw), -1) {
		if m != version && !strings.HasSuffix(m, "@"+version) {
			t.Errorf("the Dockerfile pins geodata %s; %s pins %s", m, fetchScript, version)
		}
	}
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	geo, ok := byName["geodata"]
	if !ok {
		t.Fatal("no stage named geodata")
	}
	body := strings.Join(geo.lines, "\n")
	dest := regexp.MustCompile(`FLOWPIPELINE_GEODATA=(\S+)`).FindStringSubmatch(body)
	for _, want := range []string{"COPY " + fetchScript + " ", "FLOWPIPELINE_REQUIRE_SERVICES=1", "bash /fetch.sh"} {
		if !strings.Contains(body, want) {
			t.Errorf("stage geodata lacks %q:\n%s", want, body)
		}
	}
	if dest == nil {
		t.Fatal("stage geodata does not set FLOWPIPELINE_GEODATA, where fetch.sh writes")
	}
	copied := false
	for _, l := range byName["enricher"].lines {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "COPY" && f[1] == "--from=geodata" && f[2] == dest[1] && f[3] == imageGeodata {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the enricher stage does not COPY --from=geodata %s %s", dest[1], imageGeodata)
	}
	// fetch.sh is in the build context although .ci is not.
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(string(ignore), "\n"); slices.Contains(lines, ".ci") && !slices.Contains(lines, "!"+fetchScript) {
		t.Errorf(".dockerignore excludes .ci without re-including %s", fetchScript)
	}

	// Every data path of the compose command is a file of a pinned
	// package; with the same version fetched into .cache/geodata (make
	// geodata), it exists there.
	cache := filepath.Join(root, ".cache", "geodata")
	for _, st := range stacks {
		svc := load(t, st.file).Services["enricher"]
		var files []string
		for _, name := range []string{"geo.country", "geo.asn"} {
			v, ok := flagValue(svc.Command, name)
			if !ok {
				t.Errorf("%s: the enricher has no -%s", st.file, name)
			}
			files = append(files, strings.Split(v, ",")...)
		}
		if len(files) != 3 {
			t.Errorf("%s: the enricher reads %d geodata files %v, want 3 (country MMDB, ASN IPv4 and IPv6 CSV)", st.file, len(files), files)
		}
		for _, f := range files {
			rel, ok := strings.CutPrefix(f, imageGeodata+"/")
			pkg, _, _ := strings.Cut(rel, "/")
			if !ok || !slices.Contains(packages, pkg) {
				t.Errorf("%s: %s is not in a package of %s (%v) under %s", st.file, f, fetchScript, packages, imageGeodata)
				continue
			}
			// The geodata stage prunes files the enricher does not read;
			// never one it does.
			if slices.Contains(strings.Fields(body), dest[1]+"/"+rel) {
				t.Errorf("%s: the geodata stage removes %s, which the enricher reads", st.file, dest[1]+"/"+rel)
			}
			if v, err := os.ReadFile(filepath.Join(cache, pkg, ".version")); err != nil || strings.TrimSpace(string(v)) != version {
				if os.Getenv("FLOWPIPELINE_REQUIRE_SERVICES") == "1" {
					t.Errorf("%s is not fetched at %s (run make geodata)", pkg, version)
				}
				continue
			}
			if _, err := os.Stat(filepath.Join(cache, filepath.FromSlash(rel))); err != nil {
				t.Errorf("%s: %s: package %s@%s has no such file: %v", st.file, f, pkg, version, err)
			}
		}
	}
}

// TestEnricherWiring: in every stack the enricher reads what the source
// writes and writes flows-enriched, which the inserter reads; its
// dead-letter topic is one kafka-init creates; ENRICHMENT from .env
// reaches -enrich.
func TestEnricherWiring(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			enr := p.Services["enricher"].Command
			srcFlag := "kafka.topic"
			if st.source == "goflow2" {
				srcFlag = "transport.kafka.topic"
			}
			want := map[string]string{}
			want["kafka.topic"], _ = flagValue(p.Services[st.source].Command, srcFlag)
			want["kafka.out.topic"] = "flows-enriched"
			want["kafka.dlq"] = "flows-dlq"
			want["enrich"] = "on"
			for name, w := range want {
				if got, _ := flagValue(enr, name); got != w {
					t.Errorf("enricher -%s=%q, want %q", name, got, w)
				}
			}
			// Transactions on a one-node cluster (docs/enricher.md), or on
			// three nodes, surviving the loss of one.
			txn := map[string]string{"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1"}
			if st.cluster {
				txn = map[string]string{"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2"}
			}
			for _, kafka := range kafkaServices(st.cluster) {
				for k, w := range txn {
					if v := p.Services[kafka].Environment[k]; v == nil || *v != w {
						t.Errorf("%s sets %s=%v; want %s, or no transaction starts (or survives a lost node)", kafka, k, v, w)
					}
				}
			}
			if st.sink == "postgres" {
				if got, _ := flagValue(p.Services["inserter"].Command, "kafka.topic"); got != "flows-enriched" {
					t.Errorf("inserter -kafka.topic=%q, want flows-enriched", got)
				}
			}
		})
	}
}

// TestEnricherDataFiles: the networks and exporters files the enricher's
// command names reach it through its bind mounts and load with the
// enricher's own loader, as the container would at start.
func TestEnricherDataFiles(t *testing.T) {
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			p := load(t, st.file)
			svc := p.Services["enricher"]
			host := func(inContainer string) string {
				for _, v := range svc.Volumes {
					if rel, ok := strings.CutPrefix(inContainer, v.Target+"/"); ok {
						return filepath.Join(v.Source, filepath.FromSlash(rel))
					}
				}
				t.Errorf("%s is in no bind mount of the enricher", inContainer)
				return ""
			}
			cfg := sources.DefaultConfig()
			for name, dst := range map[string]*string{"networks": &cfg.NetworksFile, "exporters": &cfg.ExportersFile} {
				v, ok := flagValue(svc.Command, name)
				if !ok {
					t.Fatalf("the enricher has no -%s", name)
				}
				if want := "/etc/flow-pipeline/demo-" + name + ".yml"; v != want {
					t.Errorf("-%s=%s, want %s by default (.env)", name, v, want)
				}
				*dst = host(path.Clean(v))
			}
			if t.Failed() {
				return
			}
			if _, err := sources.NewLoader(cfg, nil, nil); err != nil {
				t.Errorf("the enricher would not start: %v", err)
			}
		})
	}
}
