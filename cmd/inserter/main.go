// Command inserter consumes flow messages from Kafka and stores them in
// PostgreSQL exactly once. See the inserter package for how.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// flagOf maps the inserter.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":         "-kafka.brokers",
	"Topic":           "-kafka.topic",
	"Group":           "-kafka.group",
	"KafkaVersion":    "-kafka.version",
	"DLQTopic":        "-kafka.dlq",
	"AlertsTopic":     "-kafka.alerts.topic",
	"FlushCount":      "-flush.count",
	"FlushInterval":   "-flush.dur",
	"PostgresDSN":     "-postgres.dsn",
	"Writers":         "-postgres.writers",
	"Retention":       "-postgres.retention",
	"AllowSharedDB":   "-kafka.group.allow-shared-db",
	"ShutdownTimeout": "-shutdown.timeout",
	"MaxFuture":       "-flows.max-future",
}

// flags holds what the command line sets beside the inserter.Config.
type flags struct {
	brokers                                 string
	host, user, pass, passFile, dbname, dsn string
	port                                    int
	retention                               string
	metricsAddr, logLevel, logFormat        string
	probe                                   string
}

// newFlagSet binds the flags to cfg, which holds inserter.DefaultConfig():
// the flags' defaults are the library's.
func newFlagSet(out io.Writer, cfg *inserter.Config) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("inserter", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "Kafka brokers, comma-separated")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "topic of length-delimited FlowMessages to consume")
	fs.StringVar(&cfg.Group, "kafka.group", cfg.Group, "consumer group; inserters in one group share the partitions")
	fs.BoolVar(&cfg.AllowSharedDB, "kafka.group.allow-shared-db", cfg.AllowSharedDB, "start even if the database holds offsets of another group for the topic (each group stores every flow)")
	fs.StringVar(&cfg.KafkaVersion, "kafka.version", cfg.KafkaVersion, "Kafka protocol version (at least 2.1.0)")
	fs.StringVar(&cfg.AlertsTopic, "kafka.alerts.topic", cfg.AlertsTopic, "the detector's alerts topic, stored in the alerts table exactly once (consumer group -kafka.group plus \"-alerts\"); empty stores no alerts")
	fs.StringVar(&cfg.DLQTopic, "kafka.dlq", cfg.DLQTopic, "dead-letter topic for rejected records, which must exist (empty: count and drop them)")
	fs.IntVar(&cfg.FlushCount, "flush.count", cfg.FlushCount, "commit a partition's batch at this many flows")
	fs.DurationVar(&cfg.FlushInterval, "flush.dur", cfg.FlushInterval, "commit a partition's batch at most this long after its first record")
	fs.StringVar(&f.host, "postgres.host", "127.0.0.1", "PostgreSQL host (ignored with -postgres.dsn)")
	fs.IntVar(&f.port, "postgres.port", 5432, "PostgreSQL port")
	fs.StringVar(&f.user, "postgres.user", "postgres", "PostgreSQL user")
	fs.StringVar(&f.pass, "postgres.pass", "", "PostgreSQL password; prefer POSTGRES_PASSWORD or -postgres.pass-file, which do not show in ps")
	fs.StringVar(&f.passFile, "postgres.pass-file", "", "file holding the PostgreSQL password (trailing newline ignored)")
	fs.StringVar(&f.dbname, "postgres.dbname", "postgres", "PostgreSQL database")
	fs.StringVar(&f.dsn, "postgres.dsn", cfg.PostgresDSN, "PostgreSQL DSN (URL or key=value); takes precedence over -postgres.host/port/user/dbname")
	fs.IntVar(&cfg.Writers, "postgres.writers", cfg.Writers, "concurrent COPY connections; a partition always uses the same one")
	fs.StringVar(&f.retention, "postgres.retention", formatRetention(cfg.Retention), "drop daily partitions older than this, e.g. 7d or 168h; 0 keeps everything")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown.timeout", cfg.ShutdownTimeout, "on SIGTERM, commit the batches in flight within this time; keep it below the container's stop grace period")
	fs.DurationVar(&cfg.MaxFuture, "flows.max-future", cfg.MaxFuture, "reject flows received further ahead of the inserter's clock than this (reason too_new)")
	fs.StringVar(&f.metricsAddr, "metrics.addr", ":8082", "address serving /metrics, /healthz and /readyz (empty disables)")
	fs.StringVar(&f.probe, "probe", "", cli.ProbeFlagUsage)
	fs.StringVar(&f.logLevel, "loglevel", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	cli.SetUsage(fs, "inserter: consume flows from Kafka and store them in PostgreSQL exactly once.")
	return fs, f
}

func formatRetention(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

// password picks the password: the flag, then -postgres.pass-file, then
// POSTGRES_PASSWORD (the variable the postgres image uses).
func (f *flags) password() (string, error) {
	if f.pass != "" {
		return f.pass, nil
	}
	if f.passFile != "" {
		b, err := os.ReadFile(f.passFile)
		if err != nil {
			return "", fmt.Errorf("-postgres.pass-file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return os.Getenv("POSTGRES_PASSWORD"), nil
}

// postgresDSN builds the connection string; -postgres.dsn wins. A password
// from the flag, file or environment is added to a DSN that has none.
func (f *flags) postgresDSN() (string, error) {
	pass, err := f.password()
	if err != nil {
		return "", err
	}
	if f.dsn != "" {
		if pass != "" && (strings.HasPrefix(f.dsn, "postgres://") || strings.HasPrefix(f.dsn, "postgresql://")) {
			u, err := url.Parse(f.dsn)
			if err != nil {
				return "", fmt.Errorf("-postgres.dsn: %w", err)
			}
			if _, has := u.User.Password(); !has && u.User != nil {
				u.User = url.UserPassword(u.User.Username(), pass)
				return u.String(), nil
			}
		}
		return f.dsn, nil
	}
	u := url.URL{
		Scheme: "postgres",
		Host:   f.host + ":" + strconv.Itoa(f.port),
		Path:   "/" + f.dbname,
	}
	if pass != "" {
		u.User = url.UserPassword(f.user, pass)
	} else {
		u.User = url.User(f.user)
	}
	return u.String(), nil
}

// run returns the exit code: 0 stopped by a signal, 1 failure, 2 bad flags.
func run(args []string, stderr io.Writer) int {
	cmd := cli.Command{Name: "inserter", Fields: flagOf, Stderr: stderr}
	fail := cmd.Fail
	// Flags -> config.
	cfg := inserter.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg)
	logger, code, done := cmd.Start(fs, args, &f.probe, &f.logLevel, &f.logFormat)
	if done {
		return code
	}
	var err error
	cfg.Brokers = cli.SplitList(f.brokers)
	if cfg.PostgresDSN, err = f.postgresDSN(); err != nil {
		return fail(2, err)
	}
	if cfg.Retention, err = inserter.ParseRetention(f.retention); err != nil {
		return fail(2, fmt.Errorf("Config.Retention: %w", err))
	}

	// Config -> library run.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ins, err := inserter.New(cfg, logger, reg)
	if errors.Is(err, inserter.ErrInvalidConfig) {
		return fail(2, err)
	} else if err != nil {
		return fail(1, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := cli.ServeMetrics(ctx, f.metricsAddr, reg, ins.Ready, logger); err != nil {
		return fail(1, err)
	}
	logger.Info("inserter starting", "brokers", f.brokers, "topic", cfg.Topic, "group", cfg.Group, "flush_count", cfg.FlushCount, "flush_dur", cfg.FlushInterval)
	if err := ins.Run(ctx); err != nil {
		return fail(1, err)
	}
	return 0
}
