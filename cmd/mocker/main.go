// Command mocker sends realistic synthetic flows to Kafka, standing in for
// goflow2 (one length-delimited FlowMessage per record, -format=bin; more
// per record with -flows-per-record).
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// flagOf maps the mocker.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":          "-kafka.brokers",
	"Topic":            "-kafka.topic",
	"KafkaVersion":     "-kafka.version",
	"Compression":      "-kafka.compression",
	"ConnectTimeout":   "-kafka.connect-timeout",
	"Rate":             "-rate",
	"Count":            "-count",
	"FlowsPerRecord":   "-flows-per-record",
	"Seed":             "-seed",
	"ProgressInterval": "-progress.interval",
	"ShutdownTimeout":  "-shutdown.timeout",
	"Addresses":        "-addresses",
	"NetworksFile":     "-networks",
	"ExportersFile":    "-exporters",
	"Output":           "-output",
	"Collector":        "-collector",
	"Attacks":          "-attack",
	"SimulateStart":    "-simulate.start",
}

// flags holds what the command line sets beside the mocker.Config.
type flags struct {
	brokers                           string
	level, format, metricsAddr, probe string
	summary                           string
	simulateStart                     string
}

// newFlagSet binds the flags to cfg, which holds mocker.DefaultConfig():
// the flags' defaults are the library's.
func newFlagSet(stderr io.Writer, cfg *mocker.Config) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("mocker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.SetUsage(fs, "mocker sends realistic synthetic flows to Kafka, like goflow2 -format=bin.")
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "Kafka brokers, comma-separated host:port")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "Kafka topic to produce to")
	fs.StringVar(&cfg.KafkaVersion, "kafka.version", cfg.KafkaVersion, "Kafka protocol version (at least 2.1.0)")
	fs.StringVar(&cfg.Compression, "kafka.compression", cfg.Compression, "record compression: "+kafka.CompressionNames)
	fs.DurationVar(&cfg.ConnectTimeout, "kafka.connect-timeout", cfg.ConnectTimeout, "give up if Kafka and the topic are not usable within this time at start")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "flows per second; 0 = as fast as possible")
	fs.Uint64Var(&cfg.Count, "count", cfg.Count, "stop after this many flows are acknowledged by Kafka; 0 = run until stopped")
	fs.IntVar(&cfg.FlowsPerRecord, "flows-per-record", cfg.FlowsPerRecord, fmt.Sprintf("length-delimited flows per Kafka record, 1 to %d; 1 = like goflow2, more for load tests (the inserter and ClickHouse read several)", mocker.MaxFlowsPerRecord))
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "generator seed (same seed, same flows except times); 0 = seed from the clock")
	fs.StringVar(&cfg.Addresses, "addresses", cfg.Addresses, "address plan: realistic (real public prefixes of well-known networks, local customers and exporters from -networks and -exporters) or documentation (documentation and private space only)")
	fs.StringVar(&cfg.NetworksFile, "networks", cfg.NetworksFile, "realistic plan: networks file (enricher format) whose role: customer prefixes are the local side; empty = the built-in config/demo-networks.yml")
	fs.StringVar(&cfg.ExportersFile, "exporters", cfg.ExportersFile, "realistic plan: exporters file (enricher format) with the exporters and interfaces flows go through; empty = the built-in config/demo-exporters.yml")
	fs.StringVar(&cfg.Output, "output", cfg.Output, "where flows go: kafka (like goflow2 -format=bin), or datagrams of a router protocol to -collector: netflow9, ipfix or sflow")
	fs.StringVar(&cfg.Collector, "collector", cfg.Collector, "netflow9, ipfix, sflow: the collector's host:port; empty = 127.0.0.1:2055 (127.0.0.1:6343 for sflow), goflow2's defaults")
	fs.StringVar(&f.summary, "summary", "", "at exit, write what was sent (per exporter: flows, bytes, packets, scaled by the sampling rate, datagrams) to this JSON file")
	fs.Var(mocker.AttackFlag{Attacks: &cfg.Attacks}, "attack", mocker.AttackFlagUsage)
	fs.StringVar(&f.simulateStart, "simulate.start", "", "RFC3339 time: stamp flows with a simulated clock starting there and advancing 1/-rate per flow, sending as fast as possible (event time decoupled from wall time); empty = the wall clock")
	fs.DurationVar(&cfg.ProgressInterval, "progress.interval", cfg.ProgressInterval, "how often to log progress; 0 = never")
	fs.StringVar(&f.level, "loglevel", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.format, "log.format", "text", "log format: text or json")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown.timeout", cfg.ShutdownTimeout, "on SIGTERM, flush the in-flight flows within this time; keep it below the container's stop grace period")
	fs.StringVar(&f.metricsAddr, "metrics.addr", ":8081", "serve /metrics, /healthz and /readyz on this address; empty disables")
	fs.StringVar(&f.probe, "probe", "", cli.ProbeFlagUsage)
	return fs, f
}

// run returns the exit code: 0 done or stopped by a signal, 1 failure,
// 2 bad flags.
func run(args []string, stderr io.Writer) int {
	cmd := cli.Command{Name: "mocker", Fields: flagOf, Stderr: stderr}
	fail := cmd.Fail
	// Flags -> config.
	cfg := mocker.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg)
	logger, code, done := cmd.Start(fs, args, &f.probe, &f.level, &f.format)
	if done {
		return code
	}
	cfg.Brokers = cli.SplitList(f.brokers)
	if f.simulateStart != "" {
		t, err := time.Parse(time.RFC3339Nano, f.simulateStart)
		if err != nil {
			return fail(2, fmt.Errorf("-simulate.start %q: want an RFC3339 time such as 2026-01-15T22:30:00Z: %w", f.simulateStart, err))
		}
		cfg.SimulateStart = t.UTC()
	}
	// The library reads 0 as its default; on the command line it is a mistake.
	if cfg.FlowsPerRecord == 0 {
		return fail(2, mocker.CheckFlowsPerRecord(0))
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = -1 // the library's "never"
	}

	// Config -> library run.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := mocker.New(cfg, logger, reg)
	if errors.Is(err, mocker.ErrInvalidConfig) {
		return fail(2, err)
	} else if err != nil {
		return fail(1, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.ServeMetrics(ctx, f.metricsAddr, reg, m.Ready, logger); err != nil {
		return fail(1, err)
	}
	err = m.Run(ctx)
	if f.summary != "" {
		// Written whatever Run returned: what was sent is the truth either way.
		if werr := m.Summary().WriteFile(f.summary); werr != nil {
			err = errors.Join(err, fmt.Errorf("-summary %s: %w", f.summary, werr))
		}
	}
	if err != nil {
		return fail(1, err)
	}
	return 0
}
