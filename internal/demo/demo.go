// Package demo runs the whole PostgreSQL pipeline in one process tree, with
// nothing installed but Go and the PostgreSQL server binaries: an in-process
// Kafka-protocol broker (kfake), a private PostgreSQL server (pgserver), the
// project's mocker and inserter, and a live terminal view read back from
// PostgreSQL.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// Config configures a demo run. Start from DefaultConfig; in a Config
// built from scratch, zero fields take DefaultConfig's values, except
// Brokers, PostgresDSN, PostgresPort, DataDir, Duration and Seed, whose
// zero means what their comments say.
type Config struct {
	// Brokers are real Kafka brokers; empty starts an in-process broker on
	// 127.0.0.1 with Partitions partitions (default 4).
	Brokers    []string
	Topic      string // default "flows"
	Partitions int
	// PostgresDSN is an existing database; empty starts a private server
	// from the machine's binaries, its cluster in DataDir/pgdata, on
	// PostgresPort (0 = a free port).
	PostgresDSN  string
	PostgresPort int    // default 55432
	DataDir      string // required without PostgresDSN; default DefaultDataDir()
	// Reset deletes the private server's cluster first.
	Reset bool
	Rate  float64 // flows per second; default 2000
	// Duration stops the demo after this long; 0 runs until ctx ends.
	Duration time.Duration
	Refresh  time.Duration // view refresh; default 2s
	// Window is how far back the top lists look; default 1m.
	Window time.Duration
	// DrainTimeout bounds the wait for the inserter to store every produced
	// flow at the end; default 15s.
	DrainTimeout time.Duration
	// Live redraws the view in place (a terminal); otherwise it prints
	// plain lines, with the top lists every fifth refresh.
	Live bool
	// Seed of the flow generator; 0 seeds from the clock.
	Seed int64
}

// DefaultConfig is the configuration the demo binary runs with when no
// flag is given: the flags take their defaults from it.
func DefaultConfig() Config {
	return Config{
		Topic:        "flows",
		Partitions:   4,
		PostgresPort: 55432,
		DataDir:      DefaultDataDir(),
		Rate:         2000,
		Refresh:      2 * time.Second,
		Window:       time.Minute,
		DrainTimeout: 15 * time.Second,
	}
}

// DefaultDataDir is under the user's cache directory. As root, the server
// runs as the postgres user, which cannot enter root's 0700 home: use
// /var/lib instead.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/flow-pipeline/demo"
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "flow-pipeline", "demo")
	}
	return filepath.Join(os.TempDir(), "flow-pipeline-demo")
}

// setDefaults fills the zero fields that have no meaning of their own.
func (c *Config) setDefaults() {
	d := DefaultConfig()
	fill(&c.Topic, d.Topic)
	fill(&c.Partitions, d.Partitions)
	fill(&c.Rate, d.Rate)
	fill(&c.Refresh, d.Refresh)
	fill(&c.Window, d.Window)
	fill(&c.DrainTimeout, d.DrainTimeout)
}

func fill[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// ErrInvalidConfig is what Validate's errors wrap, and so Run's when the
// configuration is at fault: a command line maps it to its usage exit code.
var ErrInvalidConfig = errors.New("invalid demo configuration")

// Validate reports every invalid setting (after the defaults of zero
// fields are applied), naming the Config fields at fault.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.PostgresDSN == "" && c.DataDir == "" {
		errs = append(errs, errors.New("Config.DataDir is empty: the private PostgreSQL server needs a data directory (or set Config.PostgresDSN)"))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("Config.Partitions %d: want at least 1", c.Partitions))
	}
	if c.PostgresPort < 0 || c.PostgresPort > 65535 {
		errs = append(errs, fmt.Errorf("Config.PostgresPort %d: want 1-65535, or 0 for a free port", c.PostgresPort))
	}
	if math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0 {
		errs = append(errs, fmt.Errorf("Config.Rate %v: want flows per second > 0", c.Rate))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"Duration", c.Duration}, {"Refresh", c.Refresh}, {"Window", c.Window}, {"DrainTimeout", c.DrainTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %s: must not be negative", d.field, d.v))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

// Summary is what a run produced and stored.
type Summary struct {
	Produced uint64 // flows Kafka acknowledged to the mocker
	// Stored is the rows this run added to the flows table, counted in
	// PostgreSQL (rows at the end minus rows at the start).
	Stored uint64
	// Committed is what the inserter reports having committed; it equals
	// Stored unless something else writes to the same database.
	Committed uint64
	TotalRows uint64 // rows in flows at the end, earlier runs included
	Elapsed   time.Duration
}

// ErrMismatch means the run ended with stored different from produced.
var ErrMismatch = errors.New("stored differs from produced")

// String is the final summary line.
func (s Summary) String() string {
	return fmt.Sprintf("produced %d, stored %d", s.Produced, s.Stored)
}

// PGDataDir is the private server's cluster directory under dataDir.
func PGDataDir(dataDir string) string { return filepath.Join(dataDir, "pgdata") }

// Run runs the demo until cfg.Duration has passed or ctx ends, then stops
// the mocker, lets the inserter store what is left (within DrainTimeout),
// stops everything and returns the summary. The view goes to out; logs go
// to logger. It returns ErrMismatch (with the summary) when stored differs
// from produced.
func Run(ctx context.Context, cfg Config, out io.Writer, logger *slog.Logger) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	cfg.setDefaults()
	start := time.Now()

	dsn := cfg.PostgresDSN
	var pg *pgserver.Server
	if dsn == "" {
		var err error
		if pg, err = startPostgres(ctx, cfg, out, logger); err != nil {
			return Summary{}, err
		}
		// On early returns; the normal path stops it before the summary.
		defer func() {
			if pg != nil && pg.Running() {
				if err := pg.Stop(); err != nil {
					logger.Warn("stopping PostgreSQL", "error", err)
				}
			}
		}()
		dsn = pg.DSN()
	}

	brokers := cfg.Brokers
	if len(brokers) == 0 {
		cluster, err := kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic),
			kfake.DefaultNumPartitions(cfg.Partitions),
			kfake.AllowAutoTopicCreation(),
			// The broker keeps every record in memory: bound it by time.
			// 15 minutes is far more than the inserter ever lags here.
			kfake.BrokerConfigs(map[string]string{"log.retention.ms": strconv.Itoa(15 * 60 * 1000)}),
		)
		if err != nil {
			return Summary{}, fmt.Errorf("start the in-process Kafka broker: %w", err)
		}
		rctx, stopRetention := context.WithCancel(ctx)
		retentionDone := make(chan struct{})
		go func() { defer close(retentionDone); applyRetention(rctx, cluster) }()
		// ApplyRetention blocks forever on a closed cluster: stop it first.
		defer func() { stopRetention(); <-retentionDone; cluster.Close() }()
		brokers = cluster.ListenAddrs()
	}

	// Each run consumes with its own group, its offsets in PostgreSQL
	// starting at the topic's current end. The embedded broker is new each
	// run, so offsets a previous run stored would point into a topic that
	// no longer exists; with real brokers, starting at the end keeps older
	// records out of this run's count.
	group := "flow-demo-" + start.UTC().Format("20060102T150405.000")
	group = strings.ReplaceAll(group, ".", "")
	seeded, rowsBefore, err := prepareDB(ctx, dsn, brokers, cfg.Topic, group, logger)
	if err != nil {
		return Summary{}, err
	}

	seed := cfg.Seed
	if seed == 0 {
		seed = start.UnixNano()
	}
	m, err := mocker.New(mocker.Config{
		Brokers:          brokers,
		Topic:            cfg.Topic,
		Rate:             cfg.Rate,
		Seed:             seed,
		ProgressInterval: -1, // the view shows progress
	}, logger.With("component", "mocker"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, err
	}
	in, err := inserter.New(inserter.Config{
		Brokers: brokers,
		Topic:   cfg.Topic,
		Group:   group,
		// Every run has its own group, starting at the topic's end (see
		// prepareDB), so earlier runs' groups store nothing twice.
		AllowSharedDB: true,
		PostgresDSN:   dsn,
		// Commit at least twice per refresh so the view stays current.
		FlushInterval: min(time.Second, max(cfg.Refresh/2, 100*time.Millisecond)),
	}, logger.With("component", "inserter"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, err
	}

	v := &view{
		out: out, live: cfg.Live, window: cfg.Window, group: group, seeded: seeded,
		start: start, brokers: brokers, embedded: len(cfg.Brokers) == 0, dsn: dsn, pg: pg,
	}
	v.header(rowsBefore, cfg.Rate)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Summary{}, fmt.Errorf("connect to PostgreSQL for the view (%s): %w", dsn, err)
	}
	defer conn.Close(context.Background())

	// The view's clock and "this run" start when the pipeline does.
	v.start = time.Now()
	v.lastT = v.start
	ictx, stopInserter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInserter()
	mctx, stopMocker := context.WithCancel(ctx)
	defer stopMocker()
	var wg sync.WaitGroup
	insErr, mockErr := make(chan error, 1), make(chan error, 1)
	wg.Go(func() { insErr <- in.Run(ictx) })
	wg.Go(func() { mockErr <- m.Run(mctx) })
	// Whatever happens below, stop both before returning.
	defer func() { stopMocker(); stopInserter(); wg.Wait() }()

	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(cfg.Refresh)
	defer tick.Stop()
	var failure error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-deadline:
			break loop
		case err := <-mockErr:
			mockErr <- err // read again on the way out
			if err != nil {
				failure = fmt.Errorf("the mocker failed: %w", err)
				break loop
			}
		case err := <-insErr:
			failure = fmt.Errorf("the inserter stopped: %w", err)
			if err == nil {
				failure = errors.New("the inserter stopped unexpectedly")
			}
			break loop
		case <-tick.C:
			v.refresh(ctx, conn, m.Produced(), false)
		}
	}

	// Stop producing first, so "produced" is final, then let the inserter
	// catch up before stopping it: it commits what it holds on the way out.
	stopMocker()
	if err := <-mockErr; err != nil && failure == nil {
		failure = fmt.Errorf("the mocker failed: %w", err)
	}
	produced := m.Produced()
	if failure == nil {
		v.drain(conn, produced, cfg.DrainTimeout, logger)
	}
	stopInserter()
	wg.Wait()

	sum := Summary{Produced: produced, Committed: in.Stored(), Elapsed: time.Since(start)}
	qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	total, err := countRows(qctx, conn)
	if err != nil {
		return sum, fmt.Errorf("count the stored flows: %w", err)
	}
	sum.TotalRows = total
	sum.Stored = total - rowsBefore
	v.refresh(qctx, conn, produced, true)
	conn.Close(context.Background())
	if pg != nil {
		if err := pg.Stop(); err != nil {
			logger.Warn("stopping PostgreSQL", "error", err)
		}
		pg = nil
	}
	v.final(sum)
	if failure != nil {
		return sum, failure
	}
	if sum.Stored != sum.Produced {
		return sum, fmt.Errorf("%w: produced %d, stored %d (the inserter committed %d); run again with info logging to see why",
			ErrMismatch, sum.Produced, sum.Stored, sum.Committed)
	}
	return sum, nil
}

func startPostgres(ctx context.Context, cfg Config, out io.Writer, logger *slog.Logger) (*pgserver.Server, error) {
	data := PGDataDir(cfg.DataDir)
	if cfg.Reset {
		if pid, ok := runningPostmaster(data); ok {
			return nil, fmt.Errorf("Config.Reset: a PostgreSQL server (pid %d) is still running on %s, probably another demo: stop it first", pid, data)
		}
		// Only what we made: -data-dir may be a directory holding other things.
		for _, p := range []string{data, data + ".log"} {
			if err := os.RemoveAll(p); err != nil {
				return nil, fmt.Errorf("Config.Reset: remove %s: %w", p, err)
			}
		}
		fmt.Fprintf(out, "reset: removed %s\n", data)
	}
	srv, err := pgserver.New(pgserver.Options{DataDir: data, Port: cfg.PostgresPort}, logger.With("component", "pgserver"))
	if errors.Is(err, pgserver.ErrNotFound) {
		return nil, fmt.Errorf("%w\n  (or use a PostgreSQL server you already have: Config.PostgresDSN 'postgres://user@host:5432/db')", err)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "starting PostgreSQL from %s (data in %s)...\n", srv.BinDir(), data)
	if err := srv.Start(ctx); err != nil {
		return nil, fmt.Errorf("%w\n(Config.Reset starts from an empty data directory; Config.PostgresPort 0 picks a free port)", err)
	}
	return srv, nil
}

// prepareDB creates the inserter's schema, counts the rows already there
// and stores this run's group offsets at the topic's current end. It
// returns the sum of those offsets and the row count.
func prepareDB(ctx context.Context, dsn string, brokers []string, topic, group string, logger *slog.Logger) (seeded, rows uint64, err error) {
	sink, err := pgsink.New(pgsink.Config{DSN: dsn, Group: group}, logger)
	if err != nil {
		return 0, 0, err
	}
	defer sink.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sink.CreateSchema(cctx); err != nil {
		return 0, 0, fmt.Errorf("create the flow schema in PostgreSQL (%s): %w", dsn, err)
	}
	ends, err := topicEnds(cctx, brokers, topic)
	if err != nil {
		return 0, 0, err
	}
	if err := sink.SetStartOffsets(cctx, topic, ends); err != nil {
		return 0, 0, err
	}
	for _, off := range ends {
		seeded += uint64(off)
	}
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return 0, 0, fmt.Errorf("connect to PostgreSQL (%s): %w", dsn, err)
	}
	defer conn.Close(context.Background())
	rows, err = countRows(cctx, conn)
	if err != nil {
		return 0, 0, fmt.Errorf("count the flows already stored: %w", err)
	}
	return seeded, rows, nil
}

// topicEnds returns the next offset of every partition of topic, creating
// the topic if the broker auto-creates topics.
func topicEnds(ctx context.Context, brokers []string, topic string) (map[int32]int64, error) {
	client, err := kafka.Connect(ctx, brokers, topic,
		kafka.NewConfig("flowpipeline-demo", sarama.KafkaVersion{}, kafka.DialTimeout(5*time.Second)), 10*time.Second)
	switch {
	case errors.Is(err, kafka.ErrUnreachable):
		return nil, fmt.Errorf("%w (check Config.Brokers)", err)
	case errors.Is(err, kafka.ErrTopic):
		return nil, fmt.Errorf("%w (check Config.Topic)", err)
	case err != nil:
		return nil, err
	}
	defer client.Close()
	return kafka.EndOffsets(client, topic)
}

func countRows(ctx context.Context, conn *pgx.Conn) (uint64, error) {
	var n int64
	err := conn.QueryRow(ctx, "SELECT count(*) FROM flows").Scan(&n)
	return uint64(n), err
}

// runningPostmaster reads the pid PostgreSQL keeps in postmaster.pid while
// it runs, and reports whether that process is alive.
func runningPostmaster(data string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil
}

func applyRetention(ctx context.Context, c *kfake.Cluster) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.ApplyRetention()
		}
	}
}
