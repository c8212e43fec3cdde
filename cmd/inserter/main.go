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
	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "inserter:", err)
		os.Exit(1)
	}
}

type flags struct {
	brokers, topic, group, version, dlq     string
	flushCount                              int
	flushDur                                time.Duration
	host, user, pass, passFile, dbname, dsn string
	port, writers                           int
	retention                               string
	metricsAddr, logLevel, logFormat        string
	probe                                   string
}

func newFlagSet(out io.Writer) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("inserter", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.brokers, "kafka.brokers", "127.0.0.1:9092", "Kafka brokers, comma-separated")
	fs.StringVar(&f.topic, "kafka.topic", "flows", "topic of length-delimited FlowMessages to consume")
	fs.StringVar(&f.group, "kafka.group", "flow-inserter", "consumer group; inserters in one group share the partitions")
	fs.StringVar(&f.version, "kafka.version", kafka.DefaultVersion, "Kafka protocol version (at least 2.1.0)")
	fs.StringVar(&f.dlq, "kafka.dlq", "", "dead-letter topic for undecodable records (empty: count and drop them)")
	fs.IntVar(&f.flushCount, "flush.count", 10000, "commit a partition's batch at this many flows")
	fs.DurationVar(&f.flushDur, "flush.dur", time.Second, "commit a partition's batch at most this long after its first record")
	fs.StringVar(&f.host, "postgres.host", "127.0.0.1", "PostgreSQL host (ignored with -postgres.dsn)")
	fs.IntVar(&f.port, "postgres.port", 5432, "PostgreSQL port")
	fs.StringVar(&f.user, "postgres.user", "postgres", "PostgreSQL user")
	fs.StringVar(&f.pass, "postgres.pass", "", "PostgreSQL password; prefer POSTGRES_PASSWORD or -postgres.pass-file, which do not show in ps")
	fs.StringVar(&f.passFile, "postgres.pass-file", "", "file holding the PostgreSQL password (trailing newline ignored)")
	fs.StringVar(&f.dbname, "postgres.dbname", "postgres", "PostgreSQL database")
	fs.StringVar(&f.dsn, "postgres.dsn", "", "PostgreSQL DSN (URL or key=value); takes precedence over -postgres.host/port/user/dbname")
	fs.IntVar(&f.writers, "postgres.writers", 2, "concurrent COPY connections; a partition always uses the same one")
	fs.StringVar(&f.retention, "postgres.retention", "0", "drop daily partitions older than this, e.g. 7d or 168h; 0 keeps everything")
	fs.StringVar(&f.metricsAddr, "metrics.addr", ":8082", "address serving /metrics, /healthz and /readyz (empty disables)")
	fs.StringVar(&f.probe, "probe", "", cli.ProbeFlagUsage)
	fs.StringVar(&f.logLevel, "loglevel", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	cli.SetUsage(fs, "inserter: consume flows from Kafka and store them in PostgreSQL exactly once.")
	return fs, f
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

func run(args []string, stderr io.Writer) error {
	fs, f := newFlagSet(stderr)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if f.probe != "" {
		return cli.Probe(f.probe, 3*time.Second)
	}
	logger, err := cli.NewLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	dsn, err := f.postgresDSN()
	if err != nil {
		return err
	}
	retention, err := inserter.ParseRetention(f.retention)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ins, err := inserter.New(inserter.Config{
		Brokers:       cli.SplitList(f.brokers),
		Topic:         f.topic,
		Group:         f.group,
		KafkaVersion:  f.version,
		DLQTopic:      f.dlq,
		FlushCount:    f.flushCount,
		FlushInterval: f.flushDur,
		PostgresDSN:   dsn,
		Writers:       f.writers,
		Retention:     retention,
	}, logger, reg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := cli.ServeMetrics(ctx, f.metricsAddr, reg, ins.Ready, logger); err != nil {
		return err
	}
	logger.Info("inserter starting", "brokers", f.brokers, "topic", f.topic, "group", f.group, "flush_count", f.flushCount, "flush_dur", f.flushDur)
	return ins.Run(ctx)
}
