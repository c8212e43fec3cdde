// Command demo runs the whole PostgreSQL pipeline from source, without
// Docker: an in-process Kafka broker, a private PostgreSQL server, the
// mocker, the enricher and the inserter, with a live view of what is
// stored.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
	"github.com/spendletonliveaction/flow-pipeline/internal/demo"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

func main() {
	// `make demo | tee log`: Ctrl-C kills tee too. Without this the next
	// write to stdout would kill the demo by SIGPIPE, before PostgreSQL is
	// stopped; ignored, it is an EPIPE error that safeWriter absorbs.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args[1:], &safeWriter{w: os.Stdout, stderr: os.Stderr}, os.Stderr))
}

// safeWriter never fails: once a write to w fails (a closed pipe), it says
// so once on stderr and discards the rest, so a lost terminal or pipe never
// cuts the clean shutdown short.
type safeWriter struct {
	w      io.Writer
	stderr io.Writer
	mu     sync.Mutex
	failed bool
}

func (s *safeWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failed {
		if _, err := s.w.Write(p); err != nil {
			s.failed = true
			fmt.Fprintf(s.stderr, "demo: writing the view failed (%v); going on without it, and shutting down cleanly on Ctrl-C\n", err)
		}
	}
	return len(p), nil
}

// File lets isTerminal see the terminal behind the writer.
func (s *safeWriter) File() (*os.File, bool) { f, ok := s.w.(*os.File); return f, ok }

// flagOf maps the demo.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":       "-kafka.brokers",
	"KafkaListen":   "-kafka.listen",
	"Topic":         "-kafka.topic",
	"EnrichedTopic": "-kafka.enriched.topic",
	"AlertsTopic":   "-kafka.alerts.topic",
	"Attacks":       "-attack",
	"NetworksFile":  "-networks",
	"ExportersFile": "-exporters",
	"Retention":     "-postgres.retention",
	"PostgresDSN":   "-postgres.dsn",
	"PostgresPort":  "-postgres.port",
	"DataDir":       "-data-dir",
	"Reset":         "-reset",
	"Rate":          "-rate",
	"Duration":      "-duration",
	"Refresh":       "-refresh",
	"Window":        "-window",
}

// flags holds what the command line sets beside the demo.Config.
type flags struct {
	brokers       string
	geodata       string
	retention     string
	level, format string
}

// envPrefix keeps the shell's generic variables (DATA_DIR, RATE, ...),
// exported for other tools, out of the demo: it reads DEMO_DATA_DIR etc.
const envPrefix = "DEMO_"

// newFlagSet binds the flags to cfg, which holds demo.DefaultConfig():
// the flags' defaults are the library's.
func newFlagSet(stderr io.Writer, cfg *demo.Config) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.SetUsagePrefixed(fs, "demo runs the flow pipeline without Docker: in-process Kafka, a private PostgreSQL server, the mocker, the enricher and the inserter, with a live view.", envPrefix)
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "real Kafka brokers, comma-separated host:port; empty starts an in-process broker")
	fs.StringVar(&cfg.KafkaListen, "kafka.listen", cfg.KafkaListen, "host:port of the in-process broker, to point a mocker, collector or inserter at; empty picks a free port")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "topic the mocker writes and the enricher reads")
	fs.StringVar(&cfg.EnrichedTopic, "kafka.enriched.topic", cfg.EnrichedTopic, "topic the enricher writes and the inserter reads")
	fs.StringVar(&cfg.AlertsTopic, "kafka.alerts.topic", cfg.AlertsTopic, "topic the detector writes its alerts to and the inserter stores in the alerts table")
	fs.Var(mocker.AttackFlag{Attacks: &cfg.Attacks}, "attack", mocker.AttackFlagUsage)
	fs.StringVar(&cfg.NetworksFile, "networks", cfg.NetworksFile, "the enricher's YAML file of networks by prefix (customers, sites); empty: none")
	fs.StringVar(&cfg.ExportersFile, "exporters", cfg.ExportersFile, "the enricher's YAML file of exporters and interfaces; empty: none")
	fs.StringVar(&f.geodata, "geodata", ".cache/geodata", "directory of the ip-location-db country and ASN files (make geodata), fetched on first run when missing; empty: none")
	fs.StringVar(&cfg.PostgresDSN, "postgres.dsn", cfg.PostgresDSN, "an existing PostgreSQL database (postgres://user@host:port/db); empty starts a private server from the machine's binaries")
	fs.IntVar(&cfg.PostgresPort, "postgres.port", cfg.PostgresPort, "port of the private PostgreSQL server on 127.0.0.1; 0 picks a free one")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the private server's data (pgdata/), kept between runs")
	fs.BoolVar(&cfg.Reset, "reset", cfg.Reset, "delete the private server's data first and start afresh")
	fs.StringVar(&f.retention, "postgres.retention", "1d", "drop the stored flows' daily partitions older than this (at least 1d, e.g. 7d or 168h); 0 keeps everything")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "flows per second the mocker produces")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "stop after this long (e.g. 30s); 0 runs until Ctrl-C")
	fs.DurationVar(&cfg.Refresh, "refresh", cfg.Refresh, "how often the view is refreshed")
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "how far back the top lists look")
	fs.StringVar(&f.level, "loglevel", "warn", "log level: debug, info, warn or error")
	fs.StringVar(&f.format, "log.format", "text", "log format: text or json")
	return fs, f
}

// run returns the exit code: 0 done (produced == stored), 1 failure,
// 2 bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := cli.Command{Name: "demo", Fields: flagOf, EnvPrefix: envPrefix, Stderr: stderr}
	fail := cmd.Fail
	// Flags -> config.
	cfg := demo.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg)
	logger, code, done := cmd.Start(fs, args, nil, &f.level, &f.format)
	if done {
		return code
	}
	var err error
	cfg.Brokers = cli.SplitList(f.brokers)
	cfg.Live = isTerminal(stdout)
	if cfg.Retention, err = inserter.ParseRetention(f.retention); err != nil {
		return fail(2, fmt.Errorf("-postgres.retention: %w", err))
	}
	// The library reads 0 as its default; on the command line it is a mistake.
	if cfg.Rate == 0 {
		return fail(2, errors.New("Config.Rate 0: want flows per second > 0"))
	}

	// Config -> library run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.geodata != "" {
		var fetch []string
		if _, err := os.Stat(fetchScript); err == nil {
			fetch = []string{"bash", fetchScript}
		}
		cfg.CountryFile, cfg.ASNFiles = demo.Geodata(ctx, f.geodata, fetch, stdout)
	}
	if _, err := demo.Run(ctx, cfg, stdout, logger); errors.Is(err, demo.ErrInvalidConfig) {
		return fail(2, err)
	} else if err != nil {
		return fail(1, err)
	}
	return 0
}

// fetchScript fills the geodata directory; it is there when the demo runs
// from the repository (make demo, go run ./cmd/demo).
const fetchScript = ".ci/geodata/fetch.sh"

// isTerminal reports whether w is a terminal, where the view redraws in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if sw, isSafe := w.(*safeWriter); isSafe {
		f, ok = sw.File()
	}
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
