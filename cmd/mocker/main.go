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

// run returns the exit code: 0 done or stopped by a signal, 1 failure,
// 2 bad flags.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mocker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.SetUsage(fs, "mocker sends realistic synthetic flows to Kafka, like goflow2 -format=bin.")
	brokers := fs.String("kafka.brokers", "127.0.0.1:9092", "Kafka brokers, comma-separated host:port")
	topic := fs.String("kafka.topic", "flows", "Kafka topic to produce to")
	version := fs.String("kafka.version", kafka.DefaultVersion, "Kafka protocol version (at least 2.1.0)")
	compression := fs.String("kafka.compression", "none", "record compression: none, gzip, snappy, lz4 or zstd")
	connectTimeout := fs.Duration("kafka.connect-timeout", 10*time.Second, "give up if Kafka and the topic are not usable within this time at start")
	rate := fs.Float64("rate", 1000, "flows per second; 0 = as fast as possible")
	count := fs.Uint64("count", 0, "stop after this many flows are acknowledged by Kafka; 0 = run until stopped")
	flowsPerRecord := fs.Int("flows-per-record", 1, fmt.Sprintf("length-delimited flows per Kafka record, 1 to %d; 1 = like goflow2, more for load tests (the inserter and ClickHouse read several)", mocker.MaxFlowsPerRecord))
	seed := fs.Int64("seed", 1, "generator seed (same seed, same flows except times); 0 = seed from the clock")
	progress := fs.Duration("progress.interval", 5*time.Second, "how often to log progress; 0 = never")
	level := fs.String("loglevel", "info", "log level: debug, info, warn or error")
	format := fs.String("log.format", "text", "log format: text or json")
	metricsAddr := fs.String("metrics.addr", ":8081", "serve /metrics, /healthz and /readyz on this address; empty disables")
	probe := fs.String("probe", "", cli.ProbeFlagUsage)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 2
	}
	if *probe != "" {
		if err := cli.Probe(*probe, 3*time.Second); err != nil {
			fmt.Fprintf(stderr, "mocker: %v\n", err)
			return 1
		}
		return 0
	}
	logger, err := cli.NewLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 2
	}
	// The library reads 0 as its default; on the command line it is a mistake.
	if err := mocker.CheckFlowsPerRecord(*flowsPerRecord); err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 2
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	interval := *progress
	if interval == 0 {
		interval = -1 // the library's "never"
	}
	cfg := mocker.Config{
		Brokers:          cli.SplitList(*brokers),
		Topic:            *topic,
		KafkaVersion:     *version,
		Rate:             *rate,
		Count:            *count,
		FlowsPerRecord:   *flowsPerRecord,
		Seed:             *seed,
		Compression:      *compression,
		ConnectTimeout:   *connectTimeout,
		ProgressInterval: interval,
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 2
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := mocker.New(cfg, logger, reg)
	if err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.ServeMetrics(ctx, *metricsAddr, reg, m.Ready, logger); err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 1
	}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "mocker: %v\n", err)
		return 1
	}
	return 0
}
