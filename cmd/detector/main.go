// Command detector finds volumetric attacks in the flows and writes
// alerts to Kafka exactly once. See the detector package for how.
package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// flagOf maps the detector.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":             "-kafka.brokers",
	"Topic":               "-kafka.topic",
	"Group":               "-kafka.group",
	"AlertsTopic":         "-kafka.alerts.topic",
	"TransactionalID":     "-kafka.transactional.id",
	"TransactionInterval": "-kafka.transaction.interval",
	"TransactionTimeout":  "-kafka.transaction.timeout",
	"SessionTimeout":      "-kafka.session.timeout",
	"ShutdownTimeout":     "-shutdown.timeout",
	"ThresholdsFile":      "-thresholds",
	"PollInterval":        "-thresholds.poll",
	"Webhook":             "-webhook",
	"Step":                "-detect.step",
	"Window":              "-detect.window",
	"Lateness":            "-detect.lateness",
	"Idle":                "-detect.idle",
	"MaxSkew":             "-detect.max.skew",
	"StartSteps":          "-detect.start.steps",
	"EndAfter":            "-detect.end.after",
	"Hysteresis":          "-detect.hysteresis",
	"UpdateEvery":         "-detect.update.every",
	"Targets":             "-detect.targets",
	"MaxFuture":           "-detect.max.future",
}

// flags holds what the command line sets beside the detector.Config.
type flags struct {
	brokers                          string
	metricsAddr, logLevel, logFormat string
	probe                            string
}

// newFlagSet binds the flags to cfg, which holds detector.DefaultConfig().
func newFlagSet(out io.Writer, cfg *detector.Config) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("detector", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "Kafka brokers, comma-separated")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "topic of length-delimited FlowMessages to consume (flows-enriched; plain flows works without the per-network thresholds)")
	fs.StringVar(&cfg.Group, "kafka.group", cfg.Group, "consumer group; run one detector per group, as every target's flows must meet in one process")
	fs.StringVar(&cfg.AlertsTopic, "kafka.alerts.topic", cfg.AlertsTopic, "topic the alerts go to, JSON keyed by target, in the same transaction as the consumed offsets")
	fs.StringVar(&cfg.TransactionalID, "kafka.transactional.id", cfg.TransactionalID, "this instance's transactional id: stable across its restarts, unique among running instances")
	fs.DurationVar(&cfg.TransactionInterval, "kafka.transaction.interval", cfg.TransactionInterval, "commit a transaction at most this long after it began (alerts are visible to read_committed readers then)")
	fs.DurationVar(&cfg.TransactionTimeout, "kafka.transaction.timeout", cfg.TransactionTimeout, "the broker aborts a transaction left open this long")
	fs.DurationVar(&cfg.SessionTimeout, "kafka.session.timeout", cfg.SessionTimeout, "consumer group session timeout")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown.timeout", cfg.ShutdownTimeout, "on SIGTERM, commit the open transaction within this time")
	fs.StringVar(&cfg.ThresholdsFile, "thresholds", cfg.ThresholdsFile, "YAML thresholds file (default, vectors, networks); empty: the built-in thresholds")
	fs.DurationVar(&cfg.PollInterval, "thresholds.poll", cfg.PollInterval, "reload the thresholds file this soon after it changes (0: only on SIGHUP)")
	fs.StringVar(&cfg.Webhook, "webhook", cfg.Webhook, "URL to POST every alert to (JSON), retried with backoff from a bounded queue; empty: none")
	fs.DurationVar(&cfg.Step, "detect.step", cfg.Step, "event-time step: rates are measured per step")
	fs.DurationVar(&cfg.Window, "detect.window", cfg.Window, "the span update alerts average their figures over (a multiple of -detect.step)")
	fs.DurationVar(&cfg.Lateness, "detect.lateness", cfg.Lateness, "count flows up to this far behind the newest time_received; later ones are dropped (reason late)")
	fs.DurationVar(&cfg.MaxSkew, "detect.max.skew", cfg.MaxSkew, "the watermark waits for a partition up to this far behind the newest flow; a partition half this far ahead of the slowest is paused until the others catch up (watermark alignment)")
	fs.DurationVar(&cfg.Idle, "detect.idle", cfg.Idle, "a partition without a flow for this long stops holding the watermark back; with no flow at all, event time follows the wall clock so attacks end")
	fs.IntVar(&cfg.StartSteps, "detect.start.steps", cfg.StartSteps, "an attack starts when a threshold holds for this many consecutive steps")
	fs.DurationVar(&cfg.EndAfter, "detect.end.after", cfg.EndAfter, "an attack ends when every rate stays below its threshold times -detect.hysteresis for this long")
	fs.Float64Var(&cfg.Hysteresis, "detect.hysteresis", cfg.Hysteresis, "fraction of a threshold a rate must fall below for an attack to end")
	fs.DurationVar(&cfg.UpdateEvery, "detect.update.every", cfg.UpdateEvery, "write an update alert this often while an attack lasts")
	fs.IntVar(&cfg.Targets, "detect.targets", cfg.Targets, "destinations tracked exactly (heavy hitters; the rest go to a count-min sketch): bounds the memory")
	fs.DurationVar(&cfg.MaxFuture, "detect.max.future", cfg.MaxFuture, "drop flows stamped more than this after the wall clock (0: no check)")
	fs.StringVar(&f.metricsAddr, "metrics.addr", ":8084", "address serving /metrics, /healthz and /readyz (empty disables)")
	fs.StringVar(&f.probe, "probe", "", cli.ProbeFlagUsage)
	fs.StringVar(&f.logLevel, "loglevel", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	cli.SetUsage(fs, "detector: find volumetric attacks in the flows and write alerts to Kafka, exactly once.")
	return fs, f
}

// run returns the exit code: 0 stopped by a signal, 1 failure, 2 bad flags.
func run(args []string, stderr io.Writer) int {
	cmd := cli.Command{Name: "detector", Fields: flagOf, Stderr: stderr}
	fail := cmd.Fail
	cfg := detector.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg)
	logger, code, done := cmd.Start(fs, args, &f.probe, &f.logLevel, &f.logFormat)
	if done {
		return code
	}
	cfg.Brokers = cli.SplitList(f.brokers)
	if err := cfg.Validate(); err != nil {
		return fail(2, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// SIGHUP reloads the thresholds (detector.Run listens); before Run it
	// must not kill the process either.
	signal.Ignore(syscall.SIGHUP)
	d, err := detector.New(cfg, logger, reg)
	if err != nil {
		return fail(1, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := cli.ServeMetrics(ctx, f.metricsAddr, reg, d.Ready, logger); err != nil {
		return fail(1, err)
	}
	if err := d.Run(ctx); err != nil {
		return fail(1, err)
	}
	return 0
}
