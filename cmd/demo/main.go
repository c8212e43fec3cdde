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
	"path/filepath"
	"syscall"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
	"github.com/spendletonliveaction/flow-pipeline/internal/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultDataDir is under the user's cache directory. As root, the server
// runs as the postgres user, which cannot enter root's 0700 home: use
// /var/lib instead.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/flow-pipeline/demo"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "flow-pipeline", "demo")
	}
	return filepath.Join(os.TempDir(), "flow-pipeline-demo")
}

// run returns the exit code: 0 done (produced == stored), 1 failure,
// 2 bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.SetUsage(fs, "demo runs the flow pipeline without Docker: in-process Kafka, a private PostgreSQL server, the mocker and the inserter, with a live view.")
	brokers := fs.String("kafka.brokers", "", "real Kafka brokers, comma-separated host:port; empty starts an in-process broker")
	topic := fs.String("kafka.topic", "flows", "Kafka topic")
	dsn := fs.String("postgres.dsn", "", "an existing PostgreSQL database (postgres://user@host:port/db); empty starts a private server from the machine's binaries")
	port := fs.Int("postgres.port", 55432, "port of the private PostgreSQL server on 127.0.0.1; 0 picks a free one")
	dataDir := fs.String("data-dir", defaultDataDir(), "directory for the private server's data (pgdata/), kept between runs")
	reset := fs.Bool("reset", false, "delete the private server's data first and start afresh")
	rate := fs.Float64("rate", 2000, "flows per second the mocker produces")
	duration := fs.Duration("duration", 0, "stop after this long (e.g. 30s); 0 runs until Ctrl-C")
	refresh := fs.Duration("refresh", 2*time.Second, "how often the view is refreshed")
	window := fs.Duration("window", time.Minute, "how far back the top lists look")
	level := fs.String("loglevel", "warn", "log level: debug, info, warn or error")
	format := fs.String("log.format", "text", "log format: text or json")
	if err := cli.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	logger, err := cli.NewLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	cfg := demo.Config{
		Brokers:      cli.SplitList(*brokers),
		Topic:        *topic,
		PostgresDSN:  *dsn,
		PostgresPort: *port,
		DataDir:      *dataDir,
		Reset:        *reset,
		Rate:         *rate,
		Duration:     *duration,
		Refresh:      *refresh,
		Window:       *window,
		Live:         isTerminal(stdout),
	}
	if *rate <= 0 {
		fmt.Fprintf(stderr, "demo: -rate %v: want flows per second > 0\n", *rate)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := demo.Run(ctx, cfg, stdout, logger); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
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
