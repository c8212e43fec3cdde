// Package demo runs the whole PostgreSQL pipeline in one process tree, with
// nothing installed but Go and the PostgreSQL server binaries: an in-process
// Kafka-protocol broker (kfake, which implements transactions), a private
// PostgreSQL server (pgserver), the project's mocker, enricher (the same
// exactly-once pipeline as cmd/enricher), detector and inserter, and a live
// terminal view read back from PostgreSQL, with the attacks in progress.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
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
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/inserter"
	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/pgserver"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
)

// Config configures a demo run. Start from DefaultConfig; in a Config
// built from scratch, zero fields take DefaultConfig's values, except
// Brokers, KafkaListen, PostgresDSN, PostgresPort, DataDir, Retention,
// the data files, Duration and Seed, whose zero means what their comments
// say.
type Config struct {
	// Brokers are real Kafka brokers; empty starts an in-process broker on
	// KafkaListen with Partitions partitions (default 4).
	Brokers []string
	// KafkaListen is the in-process broker's host:port, fixed so a mocker,
	// collector or inserter can be pointed at it; empty picks a free port
	// on 127.0.0.1.
	KafkaListen   string
	Topic         string // the mocker's output, the enricher's input; default "flows"
	EnrichedTopic string // the enricher's output, the inserter's input; default "flows-enriched"
	Partitions    int
	// The enricher's data files (see enricher/sources); empty ones are not
	// used. Without any, the flows are stored with empty enrichment fields.
	CountryFile   string
	ASNFiles      []string
	NetworksFile  string
	ExportersFile string
	// Retention makes the inserter drop daily partitions older than this
	// (and reject older flows), so the demo's disk does not grow without
	// bound; 0 keeps everything.
	Retention time.Duration
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

	// AlertsTopic is the detector's output, which the inserter stores in
	// the alerts table; default "alerts".
	AlertsTopic string
	// Attacks are added to the mocker's traffic (see mocker.Attack), for
	// the detector to find.
	Attacks []mocker.Attack
}

// DefaultConfig is the configuration the demo binary runs with when no
// flag is given: the flags take their defaults from it.
func DefaultConfig() Config {
	return Config{
		KafkaListen:   "127.0.0.1:29092",
		Topic:         "flows",
		EnrichedTopic: "flows-enriched",
		AlertsTopic:   "alerts",
		NetworksFile:  "config/demo-networks.yml",
		ExportersFile: "config/demo-exporters.yml",
		Retention:     24 * time.Hour,
		Partitions:    4,
		PostgresPort:  55432,
		DataDir:       DefaultDataDir(),
		Rate:          2000,
		Refresh:       2 * time.Second,
		Window:        time.Minute,
		DrainTimeout:  15 * time.Second,
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
	fill(&c.EnrichedTopic, d.EnrichedTopic)
	fill(&c.AlertsTopic, d.AlertsTopic)
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
	if c.Topic == c.EnrichedTopic {
		errs = append(errs, fmt.Errorf("Config.Topic and Config.EnrichedTopic are both %q: the enricher needs distinct input and output topics", c.Topic))
	}
	if c.Retention < 0 || (c.Retention > 0 && c.Retention < 24*time.Hour) {
		errs = append(errs, fmt.Errorf("Config.Retention %s: the inserter's partitions are daily, use at least 1d (or 0 to keep everything)", c.Retention))
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
	// The data files first: a wrong path fails before anything starts.
	loader, err := sources.NewLoader(sources.Config{
		CountryFile: cfg.CountryFile, ASNFiles: cfg.ASNFiles,
		NetworksFile: cfg.NetworksFile, ExportersFile: cfg.ExportersFile,
	}, logger.With("component", "sources"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, fmt.Errorf("%w (Config.NetworksFile %q, Config.ExportersFile %q: the demo's files are in the repository's config/, run it from there, or give empty names to run without)",
			err, cfg.NetworksFile, cfg.ExportersFile)
	}

	dsn := cfg.PostgresDSN
	var pg *pgserver.Server
	if dsn == "" {
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
		opts := []kfake.Opt{
			kfake.NumBrokers(1),
			kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic, cfg.EnrichedTopic, cfg.AlertsTopic),
			kfake.DefaultNumPartitions(cfg.Partitions),
			kfake.AllowAutoTopicCreation(),
			// The broker keeps every record in memory: bound it by time.
			// 15 minutes is far more than the inserter ever lags here.
			kfake.BrokerConfigs(map[string]string{"log.retention.ms": strconv.Itoa(15 * 60 * 1000)}),
		}
		if cfg.KafkaListen != "" {
			addr := cfg.KafkaListen
			opts = append(opts, kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, addr) }))
		}
		cluster, err := kfake.NewCluster(opts...)
		if err != nil {
			return Summary{}, fmt.Errorf("start the in-process Kafka broker on Config.KafkaListen %s: %w (another demo may be running: give another address, or an empty one for a free port)", cfg.KafkaListen, err)
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
	inStart, rowsBefore, err := prepareDB(ctx, dsn, brokers, cfg.Topic, cfg.EnrichedTopic, group, logger)
	if err != nil {
		return Summary{}, err
	}
	ecfg := enricher.DefaultConfig()
	ecfg.Brokers, ecfg.Topic, ecfg.OutTopic = brokers, cfg.Topic, cfg.EnrichedTopic
	// Its own group: the inserter's (sarama) and the enricher's (franz-go)
	// cannot share one.
	ecfg.Group, ecfg.TransactionalID = group+"-enricher", group+"-enricher"
	// Flows reach PostgreSQL only once their transaction commits.
	ecfg.TransactionInterval = min(time.Second, max(cfg.Refresh/4, 100*time.Millisecond))
	en, err := enricher.NewPipeline(ecfg, enricher.NewTransform(loader, enricher.Options{}), logger.With("component", "enricher"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, err
	}

	det, err := newDetector(cfg, brokers, group, logger)
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
		Attacks:          cfg.Attacks,
		ProgressInterval: -1, // the view shows progress
	}, logger.With("component", "mocker"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, err
	}
	in, err := inserter.New(inserter.Config{
		Brokers: brokers,
		Topic:   cfg.EnrichedTopic,
		Group:   group,
		// The demo's disk stays bounded (and older flows are refused).
		Retention: cfg.Retention,
		// Every run has its own group, starting at the topic's end (see
		// prepareDB), so earlier runs' groups store nothing twice.
		AllowSharedDB: true,
		PostgresDSN:   dsn,
		AlertsTopic:   cfg.AlertsTopic,
		// Commit at least twice per refresh so the view stays current.
		FlushInterval: min(time.Second, max(cfg.Refresh/2, 100*time.Millisecond)),
	}, logger.With("component", "inserter"), prometheus.NewRegistry())
	if err != nil {
		return Summary{}, err
	}

	v := &view{
		out: out, live: cfg.Live, window: cfg.Window, stored: in.Stored,
		start: start, brokers: brokers, embedded: len(cfg.Brokers) == 0, dsn: dsn, pg: pg,
		topic: cfg.Topic, enriched: cfg.EnrichedTopic, files: loadedFiles(cfg),
		alerts: cfg.AlertsTopic, active: det.Active,
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
	ectx, stopEnricher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEnricher()
	dctx, stopDetector := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDetector()
	mctx, stopMocker := context.WithCancel(ctx)
	defer stopMocker()
	var wg sync.WaitGroup
	insErr, mockErr, enErr, detErr := make(chan error, 1), make(chan error, 1), make(chan error, 1), make(chan error, 1)
	wg.Go(func() { insErr <- in.Run(ictx) })
	wg.Go(func() { enErr <- en.Run(ectx) })
	wg.Go(func() { detErr <- det.Run(dctx) })
	wg.Go(func() { mockErr <- m.Run(mctx) })
	// Whatever happens below, stop all four before returning.
	defer func() { stopMocker(); stopEnricher(); stopDetector(); stopInserter(); wg.Wait() }()

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
		case err := <-enErr:
			failure = fmt.Errorf("the enricher stopped: %w", err)
			if err == nil {
				failure = errors.New("the enricher stopped unexpectedly")
			}
			break loop
		case err := <-detErr:
			failure = fmt.Errorf("the detector stopped: %w", err)
			if err == nil {
				failure = errors.New("the detector stopped unexpectedly")
			}
			break loop
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
	// Records written to the input topic during the run, by the mocker or
	// anything else (the mocker's records are one flow each): the drain
	// waits for those of another producer too, so the counts are exact.
	var written int64 = -1
	if ends, err := topicEnds(context.Background(), brokers, cfg.Topic); err == nil {
		written = 0
		for p, end := range ends {
			written += end - inStart[p]
		}
	}
	if failure == nil {
		v.drain(max(produced, uint64(max(written, 0))), cfg.DrainTimeout, logger)
	}
	stopEnricher()
	stopDetector()
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
		return sum, mismatch(sum, written, cfg.Topic)
	}
	return sum, nil
}

// mismatch explains stored != produced. written is the records the input
// topic gained during the run (-1: unknown); more than the mocker produced
// means another producer writes to the topic, and its flows are stored too.
func mismatch(sum Summary, written int64, topic string) error {
	if written > int64(sum.Produced) {
		return fmt.Errorf("%w: produced %d, stored %d: topic %q received %d records during the run, %d more than the demo's mocker produced: another producer (a mocker or collector pointed at this broker) writes to it, and its flows are stored too",
			ErrMismatch, sum.Produced, sum.Stored, topic, written, written-int64(sum.Produced))
	}
	return fmt.Errorf("%w: produced %d, stored %d (the inserter committed %d); run again with info logging to see why",
		ErrMismatch, sum.Produced, sum.Stored, sum.Committed)
}

// loadedFiles lists the enricher's data files, for the header.
func loadedFiles(cfg Config) []string {
	var files []string
	for _, f := range append([]string{cfg.CountryFile}, append(cfg.ASNFiles, cfg.NetworksFile, cfg.ExportersFile)...) {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
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
	if pid, ok := runningPostmaster(data); ok {
		return nil, fmt.Errorf("a PostgreSQL server (pid %d) already runs on %s, probably another demo: give this one another Config.DataDir (or stop the other first)", pid, data)
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
// and starts this run's group at the current end of both topics: the
// inserter's offsets of enriched in PostgreSQL, the enricher's of topic in
// Kafka. It returns topic's end offsets and the row count.
func prepareDB(ctx context.Context, dsn string, brokers []string, topic, enriched, group string, logger *slog.Logger) (inStart map[int32]int64, rows uint64, err error) {
	sink, err := pgsink.New(pgsink.Config{DSN: dsn, Group: group}, logger)
	if err != nil {
		return nil, 0, err
	}
	defer sink.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sink.CreateSchema(cctx); err != nil {
		return nil, 0, fmt.Errorf("create the flow schema in PostgreSQL (%s): %w", dsn, err)
	}
	ends, err := topicEnds(cctx, brokers, enriched)
	if err != nil {
		return nil, 0, err
	}
	if err := sink.SetStartOffsets(cctx, enriched, ends); err != nil {
		return nil, 0, err
	}
	if inStart, err = topicEnds(cctx, brokers, topic); err != nil {
		return nil, 0, err
	}
	if err := commitGroupOffsets(cctx, brokers, group+"-enricher", topic, inStart); err != nil {
		return nil, 0, err
	}
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, 0, fmt.Errorf("connect to PostgreSQL (%s): %w", dsn, err)
	}
	defer conn.Close(context.Background())
	rows, err = countRows(cctx, conn)
	if err != nil {
		return nil, 0, fmt.Errorf("count the flows already stored: %w", err)
	}
	return inStart, rows, nil
}

// commitGroupOffsets starts the enricher's new group at offsets: a new
// group would otherwise start at the topic's beginning and enrich, and so
// store, records of earlier runs.
func commitGroupOffsets(ctx context.Context, brokers []string, group, topic string, offsets map[int32]int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("connect to Kafka to set the enricher's start offsets: %w", err)
	}
	defer cl.Close()
	offs := make(kadm.Offsets)
	for p, off := range offsets {
		offs.Add(kadm.Offset{Topic: topic, Partition: p, At: off, LeaderEpoch: -1})
	}
	resp, err := kadm.NewClient(cl).CommitOffsets(ctx, group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("set the enricher's start offsets on %s (group %s): %w", topic, group, err)
	}
	return nil
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

// newDetector is the demo's detector: flows-enriched to the alerts topic,
// exactly once, with the built-in thresholds, in its own group (which
// starts at the topic's beginning: the embedded broker is new every run).
func newDetector(cfg Config, brokers []string, group string, logger *slog.Logger) (*detector.Detector, error) {
	dcfg := detector.DefaultConfig()
	dcfg.Brokers, dcfg.Topic, dcfg.AlertsTopic = brokers, cfg.EnrichedTopic, cfg.AlertsTopic
	dcfg.Group, dcfg.TransactionalID = group+"-detector", group+"-detector"
	// Alerts (and Active) follow within a refresh.
	dcfg.TransactionInterval = min(dcfg.TransactionInterval, max(cfg.Refresh/2, 100*time.Millisecond))
	return detector.New(dcfg, logger.With("component", "detector"), prometheus.NewRegistry())
}
