// Package cli holds the command-line concerns every flow-pipeline binary
// shares: flags with environment fallbacks, the logger, the metrics/health
// HTTP server and the health probe. Libraries never import it; Kafka
// settings live in internal/kafka.
package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// EnvName is the environment variable that sets a flag: "kafka.brokers"
// becomes KAFKA_BROKERS and "postgres.pass-file" POSTGRES_PASS_FILE.
func EnvName(flagName string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return strings.ToUpper(r.Replace(flagName))
}

// Parse parses args into fs, after setting every flag not given on the
// command line from its environment variable (see EnvName), so compose files
// can configure a binary either way. The command line wins.
func Parse(fs *flag.FlagSet, args []string) error { return ParsePrefixed(fs, args, "") }

// ParsePrefixed is Parse with prefix before every environment variable's
// name ("DEMO_" reads DEMO_DATA_DIR for -data-dir): a command people run in
// their own shell must not pick up generic names exported for other tools.
func ParsePrefixed(fs *flag.FlagSet, args []string, prefix string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := prefix + EnvName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", name, v, err))
			}
		}
	})
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	return errors.Join(errs...)
}

// SetUsage makes -h list each flag with its environment variable.
func SetUsage(fs *flag.FlagSet, summary string) { SetUsagePrefixed(fs, summary, "") }

// SetUsagePrefixed is SetUsage for a command parsed by ParsePrefixed.
func SetUsagePrefixed(fs *flag.FlagSet, summary, prefix string) {
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each can also be set by the environment variable shown):\n", summary)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s  (env %s, default %q)\n    \t%s\n", f.Name, prefix+EnvName(f.Name), f.DefValue, f.Usage)
		})
	}
}

// NewLogger builds the process logger: text by default, JSON on request.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-loglevel %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log.format %q: want text or json", format)
}

// FlagNames rewrites the Config field names a library's error names
// ("Config.Brokers") into the flags that set them ("-kafka.brokers"), so
// users read the names they type. fields maps a field name to its flag,
// leading dash included. The result still unwraps to err, for errors.Is.
func FlagNames(err error, fields map[string]string) error {
	if err == nil {
		return nil
	}
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	// Longest first: Config.RetryMax must not become <flag of RetryMin>ax.
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	var pairs []string
	for _, f := range names {
		pairs = append(pairs, "Config."+f, fields[f])
	}
	return &flagError{msg: strings.NewReplacer(pairs...).Replace(err.Error()), err: err}
}

type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// ServeMetrics serves /metrics from gatherer, /healthz (the process is up)
// and /readyz (ready() is true) on addr until ctx ends. An empty addr
// disables the server. It returns once listening, so a bad address is an
// error at start, not a log line later.
func ServeMetrics(ctx context.Context, addr string, gatherer prometheus.Gatherer, ready func() bool, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-metrics.addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil && !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", addr, "error", err)
		}
	}()
	logger.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}

// ProbeFlagUsage describes the -probe flag every server binary has. The
// example names no port: each binary's is its own -metrics.addr (the
// mocker's 8081, the inserter's 8082, the enricher's 8083).
const ProbeFlagUsage = "check that this URL answers 200 (e.g. http://127.0.0.1:<port of -metrics.addr>/readyz), then exit 0, or 1 if not; for container health checks, since the images have no curl or wget"

// Probe asks a running binary's health endpoint whether it is ready. The
// images are built FROM scratch, so their health checks run the binary
// itself with -probe instead of a shell tool.
func Probe(url string, timeout time.Duration) error {
	client := http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s", url, resp.Status)
	}
	return nil
}
