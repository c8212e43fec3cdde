// Command demo runs the whole PostgreSQL pipeline from source, without
// Docker: an in-process Kafka broker, a private PostgreSQL server, the
// mocker and the inserter, with a live view of what is stored.
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

	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
	"github.com/spendletonliveaction/flow-pipeline/internal/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// flagOf maps the demo.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":      "-kafka.brokers",
	"Topic":        "-kafka.topic",
	"PostgresDSN":  "-postgres.dsn",
	"PostgresPort": "-postgres.port",
	"DataDir":      "-data-dir",
	"Reset":        "-reset",
	"Rate":         "-rate",
	"Duration":     "-duration",
	"Refresh":      "-refresh",
	"Window":       "-window",
}

// flags holds what the command line sets beside the demo.Config.
type flags struct {
	brokers       string
	level, format string
}

// newFlagSet binds the flags to cfg, which holds demo.DefaultConfig():
// the flags' defaults are the library's.
func newFlagSet(stderr io.Writer, cfg *demo.Config) (*flag.FlagSet, *flags) {
	f := &flags{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.SetUsage(fs, "demo runs the flow pipeline without Docker: in-process Kafka, a private PostgreSQL server, the mocker and the inserter, with a live view.")
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "real Kafka brokers, comma-separated host:port; empty starts an in-process broker")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "Kafka topic")
	fs.StringVar(&cfg.PostgresDSN, "postgres.dsn", cfg.PostgresDSN, "an existing PostgreSQL database (postgres://user@host:port/db); empty starts a private server from the machine's binaries")
	fs.IntVar(&cfg.PostgresPort, "postgres.port", cfg.PostgresPort, "port of the private PostgreSQL server on 127.0.0.1; 0 picks a free one")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the private server's data (pgdata/), kept between runs")
	fs.BoolVar(&cfg.Reset, "reset", cfg.Reset, "delete the private server's data first and start afresh")
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
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "demo: %v\n", cli.FlagNames(err, flagOf))
		return code
	}
	// Flags -> config.
	cfg := demo.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg)
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail(2, err)
	}
	logger, err := cli.NewLogger(stderr, f.level, f.format)
	if err != nil {
		return fail(2, err)
	}
	cfg.Brokers = cli.SplitList(f.brokers)
	cfg.Live = isTerminal(stdout)
	// The library reads 0 as its default; on the command line it is a mistake.
	if cfg.Rate == 0 {
		return fail(2, errors.New("Config.Rate 0: want flows per second > 0"))
	}

	// Config -> library run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := demo.Run(ctx, cfg, stdout, logger); errors.Is(err, demo.ErrInvalidConfig) {
		return fail(2, err)
	} else if err != nil {
		return fail(1, err)
	}
	return 0
}

// isTerminal reports whether w is a terminal, where the view redraws in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
