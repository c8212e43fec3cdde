// Package inserter consumes flow messages from a Kafka topic with a
// consumer group and stores them in PostgreSQL exactly once: each batch is
// written with binary COPY in the same transaction as the Kafka offsets it
// covers, and partitions resume from the offsets stored in PostgreSQL.
package inserter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/inserter/pgsink"
	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
)

// Config configures an Inserter. Zero values take the defaults listed.
type Config struct {
	Brokers      []string // required
	Topic        string   // default "flows"
	Group        string   // default DefaultGroup
	KafkaVersion string   // default kafka.DefaultVersion; at least 2.1.0
	// DLQTopic, if set, receives a copy of every rejected record, with
	// headers saying why and where it came from (at least once).
	DLQTopic string
	// AllowSharedDB lets this group start on a database that holds offsets
	// of another group for the same topic. Off, such a start is refused:
	// two groups each store every flow, so everything would be stored twice.
	AllowSharedDB bool
	// AlertsTopic, if set, is the detector's alerts topic: its JSON records
	// are stored in the alerts table, exactly once (see alerts.go), by the
	// consumer group Group+"-alerts". Empty stores no alerts; DefaultConfig
	// (and so the binary) sets DefaultAlertsTopic.
	AlertsTopic string

	// A partition's batch is committed when it holds FlushCount flows
	// (default 10000) or FlushInterval (default 1s) after its first record.
	FlushCount    int
	FlushInterval time.Duration
	// QueuedBatches is how many full batches may wait for each writer
	// (default 2); consumption pauses beyond that, bounding memory.
	QueuedBatches int
	// Writers is the number of concurrent PostgreSQL writers (default 2),
	// each with its own connection. A partition always goes to the same
	// writer, so its batches commit in order.
	Writers int

	PostgresDSN string // required
	// Retention drops daily partitions older than this; 0 keeps everything.
	// Flows older than Retention are rejected (reason too_old).
	Retention time.Duration
	// RetentionInterval is how often retention runs (default 10m); the
	// maintenance loop that creates tomorrow's partition ahead, and retries
	// an unfinished retention, wakes every min(1m, RetentionInterval).
	RetentionInterval time.Duration
	// MaxFuture rejects flows received further ahead of Now (reason
	// too_new); default DefaultMaxFuture (10m).
	MaxFuture time.Duration
	// Now is the clock for validation bounds, the retention cutoff and
	// partition pre-creation (nil means time.Now); tests move it to
	// simulate a day change.
	Now func() time.Time

	// Failed writes and connections are retried with exponential backoff
	// from RetryMin (default 100ms) to RetryMax (default 5s), forever.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the final flush after Run's context ends
	// (default 20s); keep it below the container's stop grace period. An
	// unfinished batch is simply re-read on restart.
	ShutdownTimeout time.Duration
	// HealthInterval is how often PostgreSQL is pinged for /readyz, even
	// while idle (default 1s); a ping that takes longer counts as down.
	HealthInterval time.Duration
}

// DefaultGroup is the consumer group used when none is set; the compose
// files use it too.
const DefaultGroup = "inserter"

// DefaultAlertsTopic is the detector's alerts topic.
const DefaultAlertsTopic = "alerts"

// Bounds on what the consumer holds in memory; see saramaConfig.
const (
	fetchDefault   = 128 << 10 // per partition per fetch, compressed
	fetchMaxBytes  = 8 << 20   // per fetch response, all partitions, compressed
	channelBuffer  = 32        // decoded records buffered per partition
	maxDecompBatch = 16 << 20  // one record batch, decompressed
	maxResponse    = 32 << 20  // any response sarama will read
)

func (c *Config) setDefaults() {
	if c.Topic == "" {
		c.Topic = "flows"
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.KafkaVersion == "" {
		c.KafkaVersion = kafka.DefaultVersion
	}
	if c.FlushCount == 0 {
		c.FlushCount = 10000
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.QueuedBatches == 0 {
		c.QueuedBatches = 2
	}
	if c.Writers == 0 {
		c.Writers = 2
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxFuture == 0 {
		c.MaxFuture = DefaultMaxFuture
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 20 * time.Second
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = time.Second
	}
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("Config.Brokers is empty: want Kafka brokers as host:port"))
	}
	if c.PostgresDSN == "" {
		errs = append(errs, errors.New("Config.PostgresDSN is empty: want a PostgreSQL connection string"))
	}
	if c.AlertsTopic != "" && (c.AlertsTopic == c.Topic || c.AlertsTopic == c.DLQTopic) {
		errs = append(errs, fmt.Errorf("Config.AlertsTopic %q must differ from Config.Topic and Config.DLQTopic", c.AlertsTopic))
	}
	if c.DLQTopic != "" && c.DLQTopic == c.Topic {
		errs = append(errs, fmt.Errorf("Config.DLQTopic %q must differ from Config.Topic", c.DLQTopic))
	}
	if c.Writers < 1 || c.Writers > 32 {
		errs = append(errs, fmt.Errorf("Config.Writers %d: want 1 to 32", c.Writers))
	}
	if c.FlushCount < 1 {
		errs = append(errs, fmt.Errorf("Config.FlushCount %d: must be at least 1", c.FlushCount))
	}
	if c.FlushInterval < 0 || c.Retention < 0 || c.MaxFuture < 0 || c.RetryMin < 0 || c.RetryMax < c.RetryMin || c.QueuedBatches < 0 || c.ShutdownTimeout < 0 || c.HealthInterval < 0 {
		errs = append(errs, errors.New("Config.FlushInterval, Config.Retention, Config.MaxFuture, Config.RetryMin, Config.QueuedBatches, Config.ShutdownTimeout and Config.HealthInterval must not be negative, and Config.RetryMax must be at least Config.RetryMin"))
	}
	if c.MaxFuture > 366*24*time.Hour {
		errs = append(errs, fmt.Errorf("Config.MaxFuture %s: a clock that far ahead is broken; use at most 8784h", c.MaxFuture))
	}
	if c.Retention > 0 && c.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("Config.Retention %s: partitions are daily, use at least 1d (or 0 to keep everything)", c.Retention))
	}
	if _, err := kafka.ParseVersion(c.KafkaVersion); err != nil {
		errs = append(errs, fmt.Errorf("Config.KafkaVersion: %w", err))
	}
	return errors.Join(errs...)
}

// DefaultConfig is the configuration the inserter binary runs with when no
// flag is given; its flags take their defaults from it. PostgresDSN stays
// empty: the binary builds it from its PostgreSQL flags. In a Config passed
// to New, zero fields take these values too, except Brokers (required).
func DefaultConfig() Config {
	c := Config{Brokers: []string{"127.0.0.1:9092"}, AlertsTopic: DefaultAlertsTopic}
	c.setDefaults()
	return c
}

// ErrInvalidConfig is what Validate's errors wrap, and so New's when the
// configuration is at fault.
var ErrInvalidConfig = errors.New("invalid inserter configuration")

// Validate reports every invalid setting (after the defaults of zero
// fields are applied), naming the Config fields at fault.
func (c Config) Validate() error {
	c.setDefaults()
	if err := c.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// ParseRetention reads a retention setting: a Go duration or a
// number of days such as "7d"; "0" or "" keeps everything.
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("retention %q: want a number of days like 7d, or a duration like 168h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("retention %q: want a number of days like 7d, or a duration like 168h", s)
	}
	return d, nil
}

// Inserter moves flows from Kafka to PostgreSQL. Create it with New and
// start it with Run.
type Inserter struct {
	cfg     Config
	version sarama.KafkaVersion
	logger  *slog.Logger
	m       *metrics
	am      *alertMetrics
	sink    *pgsink.Sink
	invalid *rateLog

	stored      atomic.Uint64
	schemaReady atomic.Bool
	pgHealthy   atomic.Bool // the last write succeeded
	pgReachable atomic.Bool // the last health ping succeeded
	kafkaUp     atomic.Bool

	alertsStored atomic.Uint64 // alerts.go

	batches []chan *pgsink.Batch // one per writer
	free    sync.Pool

	// Set by Run.
	client sarama.Client
	dlq    sarama.SyncProducer
}

// New checks cfg and registers the metrics on reg. It connects to nothing.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Inserter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	version, err := kafka.ParseVersion(cfg.KafkaVersion)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register inserter metrics: %w", err)
	}
	am, err := newAlertMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register inserter metrics: %w", err)
	}
	// One connection per writer, one for DDL and retention, one for the
	// health ping, so a busy pool never fails the ping.
	sink, err := pgsink.New(pgsink.Config{DSN: cfg.PostgresDSN, Group: cfg.Group, MaxConns: int32(cfg.Writers + 2),
		Committed: func(receivedNs []int64) { m.observeLatency(receivedNs, time.Now()) }}, logger)
	if err != nil {
		return nil, err
	}
	in := &Inserter{
		cfg:     cfg,
		version: version,
		logger:  logger,
		m:       m,
		am:      am,
		sink:    sink,
		invalid: newRateLog(logger, 10*time.Second),
	}
	for range cfg.Writers {
		in.batches = append(in.batches, make(chan *pgsink.Batch, cfg.QueuedBatches))
	}
	in.pgHealthy.Store(true)
	in.pgReachable.Store(true)
	setSaramaLimits()
	return in, nil
}

// Stored is the number of flows this inserter committed to PostgreSQL.
func (in *Inserter) Stored() uint64 { return in.stored.Load() }

// Ready reports whether the schema exists, Kafka is connected, the last
// PostgreSQL write succeeded and PostgreSQL answered the last health ping
// (every HealthInterval): /readyz.
func (in *Inserter) Ready() bool {
	return in.schemaReady.Load() && in.kafkaUp.Load() && in.pgHealthy.Load() && in.pgReachable.Load()
}

func (in *Inserter) updateReady() {
	if in.Ready() {
		in.m.ready.Set(1)
	} else {
		in.m.ready.Set(0)
	}
}

// Run consumes until ctx ends, then commits the batches in flight (within
// ShutdownTimeout) and returns nil. PostgreSQL or Kafka being unreachable,
// at start or later, is retried with backoff, never fatal. A configuration
// that cannot work is an error at start: offsets of another consumer group
// for the topic (see AllowSharedDB), a missing dead-letter topic, a
// dead-letter producer that cannot be created.
func (in *Inserter) Run(ctx context.Context) error {
	defer in.sink.Close()
	if err := in.startPostgres(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // ctx ended while waiting: a clean shutdown
		}
		return err
	}
	if err := in.startKafka(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer in.client.Close()
	if in.dlq != nil {
		defer in.dlq.Close()
	}
	group, err := sarama.NewConsumerGroupFromClient(in.cfg.Group, in.client)
	if err != nil {
		return fmt.Errorf("create Kafka consumer group %q: %w", in.cfg.Group, err)
	}

	// The writer outlives ctx by up to ShutdownTimeout to commit what the
	// claims flushed on their way out.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	stopDeadline := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(in.cfg.ShutdownTimeout, wcancel)
		context.AfterFunc(wctx, func() { t.Stop() })
	})
	defer stopDeadline()
	var writers sync.WaitGroup
	for _, ch := range in.batches {
		writers.Go(func() { in.writer(wctx, ch) })
	}
	var bg sync.WaitGroup
	bg.Go(func() {
		for err := range group.Errors() {
			in.m.kafkaErrors.Inc()
			if errors.Is(err, sarama.ErrDecompressedBatchTooLarge) {
				// sarama refetches the same batch: the partitions fetched
				// with it stay stuck until an operator removes it.
				in.logger.Error("a Kafka record batch decompresses to more than the inserter's bound; its partition cannot be consumed past it. "+
					"Find the batch from the partition's lag, and remove it with kafka-delete-records.sh if it is hostile",
					"bound_bytes", maxDecompBatch, "error", err)
				continue
			}
			in.logger.Warn("Kafka consumer error; sarama retries", "error", err)
		}
	})
	bg.Go(func() { in.maintenanceLoop(ctx) })
	bg.Go(func() { in.healthLoop(ctx) })
	if in.cfg.AlertsTopic != "" {
		bg.Go(func() { in.runAlerts(ctx) })
	}

	h := &handler{in: in, runCtx: ctx}
	backoff := in.cfg.RetryMin
	for ctx.Err() == nil {
		err := group.Consume(ctx, []string{in.cfg.Topic}, h)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			in.m.kafkaErrors.Inc()
			if in.kafkaUp.Swap(false) {
				in.updateReady()
			}
			in.logger.Warn("Kafka consumer group session failed; rejoining", "group", in.cfg.Group, "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, in.cfg.RetryMax)
			continue
		}
		backoff = in.cfg.RetryMin
	}
	in.logger.Info("stopping: committing the batches in flight", "timeout", in.cfg.ShutdownTimeout)
	for _, ch := range in.batches {
		close(ch)
	}
	writers.Wait()
	if err := group.Close(); err != nil {
		in.logger.Warn("closing the Kafka consumer group", "error", err)
	}
	bg.Wait()
	in.logger.Info("stopped", "flows_stored", in.Stored())
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startPostgres waits for the database and creates the schema. Compose
// starts the inserter beside the database, so a refused connection at start
// is expected and retried rather than fatal.
func (in *Inserter) startPostgres(ctx context.Context) error {
	backoff := in.cfg.RetryMin
	for {
		err := in.sink.CreateSchema(ctx)
		if err == nil {
			err = in.checkGroups(ctx)
			var fatal *fatalError
			if errors.As(err, &fatal) {
				return fatal.err
			}
		}
		if err == nil {
			in.schemaReady.Store(true)
			in.updateReady()
			in.logger.Info("PostgreSQL schema ready")
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		in.countPGError(err)
		in.logger.Warn("PostgreSQL is not ready; check the connection settings and that the server runs. Retrying", "error", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, in.cfg.RetryMax)
	}
}

// fatalError is a start failure that retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// checkGroups refuses to start when the database holds offsets of another
// consumer group for the topic, unless AllowSharedDB.
func (in *Inserter) checkGroups(ctx context.Context) error {
	others, err := in.sink.OtherGroups(ctx, in.cfg.Topic)
	if err != nil {
		return err
	}
	if len(others) == 0 {
		return nil
	}
	if in.cfg.AllowSharedDB {
		in.logger.Info("the database holds offsets of other consumer groups for this topic (allowed by Config.AllowSharedDB); each group stores every flow",
			"topic", in.cfg.Topic, "group", in.cfg.Group, "other_groups", others)
		return nil
	}
	return &fatalError{fmt.Errorf("the database already holds offsets of consumer group(s) %s for topic %q, and this inserter's group is %q: "+
		"each group stores every flow, so every flow would be stored twice. Set Config.Group to %s to continue where that group stopped, "+
		"or set Config.AllowSharedDB if a second group on this database is meant",
		strings.Join(quoteAll(others), ", "), in.cfg.Topic, in.cfg.Group, others[0])}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// healthLoop pings PostgreSQL every HealthInterval with the same timeout,
// so /readyz turns false within seconds of the database going away, even
// when no batch is being written. Two failures in a row are needed, so one
// slow ping under load does not flap readiness.
func (in *Inserter) healthLoop(ctx context.Context) {
	t := time.NewTicker(in.cfg.HealthInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, in.cfg.HealthInterval)
		err := in.sink.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
		} else {
			failures = 0
		}
		ok := failures < 2
		if in.pgReachable.Swap(ok) != ok {
			in.updateReady()
			if ok {
				in.logger.Info("PostgreSQL answers again")
			} else {
				in.countPGError(err)
				in.logger.Warn("PostgreSQL does not answer; not ready", "error", err)
			}
		}
	}
}

var saramaLimits sync.Once

// setSaramaLimits sets sarama's process-wide safety nets: no response
// above maxResponse is read, and no record batch decompresses to more than
// maxDecompBatch (sarama's default is unbounded). Only raised bounds set
// by someone else are lowered.
func setSaramaLimits() {
	saramaLimits.Do(func() {
		if sarama.MaxResponseSize > maxResponse {
			sarama.MaxResponseSize = maxResponse
		}
		if sarama.MaxDecompressedBatchSize <= 0 || sarama.MaxDecompressedBatchSize > maxDecompBatch {
			sarama.MaxDecompressedBatchSize = maxDecompBatch
		}
	})
}

// saramaConfig bounds what the consumer holds: per partition, one fetch of
// at most fetchDefault compressed bytes (the broker still returns a whole
// first batch if it is larger, up to its max.message.bytes) plus
// channelBuffer decoded records; each batch decompresses to at most
// maxDecompBatch.
func (in *Inserter) saramaConfig() *sarama.Config {
	sc := kafka.NewConfig("flowpipeline-inserter", in.version)
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Never store an aborted transaction's records (the enricher writes
	// its output in transactions; they stay in the log after an abort).
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Fetch.Default = fetchDefault
	sc.Consumer.Fetch.Max = fetchMaxBytes
	sc.Consumer.Fetch.MaxBytes = fetchMaxBytes
	sc.ChannelBufferSize = channelBuffer
	// Never create a topic by asking for it: a typo in -kafka.dlq must
	// fail at start, not create a topic nobody reads.
	sc.Metadata.AllowAutoTopicCreation = false
	// The writer may hold a partition's batch while PostgreSQL is down;
	// give the consume loop time before sarama considers it stuck.
	sc.Consumer.MaxProcessingTime = time.Second
	sc.Metadata.RefreshFrequency = time.Minute
	if in.cfg.DLQTopic != "" {
		sc.Producer.Return.Successes = true
		sc.Producer.RequiredAcks = sarama.WaitForAll
		// Kafka's default max.message.bytes: sarama splits requests to
		// stay below it, and truncates nothing a default topic accepts.
		sc.Producer.MaxMessageBytes = 1_000_000
	}
	return sc
}

func (in *Inserter) startKafka(ctx context.Context) error {
	backoff := in.cfg.RetryMin
	for {
		client, err := sarama.NewClient(in.cfg.Brokers, in.saramaConfig())
		if err == nil {
			in.client = client
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		in.m.kafkaErrors.Inc()
		in.logger.Warn("Kafka is not reachable; check the broker addresses. Retrying", "brokers", in.cfg.Brokers, "error", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, in.cfg.RetryMax)
	}
	if in.cfg.DLQTopic != "" {
		if err := in.checkDLQTopic(ctx); err != nil {
			in.client.Close()
			return err
		}
		p, err := sarama.NewSyncProducerFromClient(in.client)
		if err != nil {
			in.client.Close()
			return fmt.Errorf("create the dead-letter producer for Config.DLQTopic %q: %w", in.cfg.DLQTopic, err)
		}
		in.dlq = p
	}
	in.kafkaUp.Store(true)
	in.updateReady()
	in.logger.Info("connected to Kafka", "brokers", in.cfg.Brokers, "topic", in.cfg.Topic, "group", in.cfg.Group)
	return nil
}

// checkDLQTopic fails when the dead-letter topic does not exist; other
// metadata errors (a broker restarting) are retried.
func (in *Inserter) checkDLQTopic(ctx context.Context) error {
	backoff := in.cfg.RetryMin
	for {
		err := in.client.RefreshMetadata(in.cfg.DLQTopic)
		if err == nil {
			_, err = in.client.Partitions(in.cfg.DLQTopic)
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return fmt.Errorf("the dead-letter topic %q (Config.DLQTopic) does not exist on %s: create it (kafka-topics.sh --create --topic %s) or leave Config.DLQTopic empty",
				in.cfg.DLQTopic, strings.Join(in.cfg.Brokers, ","), in.cfg.DLQTopic)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		in.m.kafkaErrors.Inc()
		in.logger.Warn("cannot read the dead-letter topic's metadata; retrying", "topic", in.cfg.DLQTopic, "error", err, "retry_in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, in.cfg.RetryMax)
	}
}

func (in *Inserter) countPGError(err error) {
	op := "write"
	var pe *pgsink.Error
	if errors.As(err, &pe) {
		op = pe.Op
	}
	in.m.pgErrors.WithLabelValues(op).Inc()
}

func (in *Inserter) getBatch(topic string, partition int32) *pgsink.Batch {
	if b, ok := in.free.Get().(*pgsink.Batch); ok {
		b.Reset(topic, partition)
		return b
	}
	b := pgsink.NewBatch(topic, partition)
	b.Grow(in.cfg.FlushCount)
	return b
}

// queueFor is the writer queue of a partition: always the same one, so a
// partition's batches commit in order.
func (in *Inserter) queueFor(partition int32) chan<- *pgsink.Batch {
	return in.batches[int(partition)%len(in.batches)]
}

// writer commits batches one at a time, retrying each until it lands:
// a failed transaction stored nothing, and stored records are skipped by
// offset, so retrying can neither lose nor double a flow. Records
// PostgreSQL refuses for their content are rejected one by one (see
// storeRange); only transient failures are retried.
func (in *Inserter) writer(ctx context.Context, batches <-chan *pgsink.Batch) {
	for b := range batches {
		if ctx.Err() != nil {
			continue // shutdown deadline passed: drop; the records are re-read on restart
		}
		start := time.Now()
		backoff := in.cfg.RetryMin
		var res pgsink.Result
		var err error
		for {
			var r pgsink.Result
			r, err = in.storeRange(ctx, b, res.Done, b.Records())
			res.Flows += r.Flows
			res.SkippedRecords += r.SkippedRecords
			res.Done += r.Done
			if err == nil || ctx.Err() != nil {
				break
			}
			if errors.Is(err, pgsink.ErrGap) {
				break
			}
			in.countPGError(err)
			if in.pgHealthy.Swap(false) {
				in.updateReady()
			}
			in.logger.Warn("storing a batch in PostgreSQL failed; retrying the rest of the batch", "topic", b.Topic, "partition", b.Partition,
				"flows", b.Flows(), "records_done", res.Done, "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, in.cfg.RetryMax)
		}
		// What was committed is stored whatever happens next.
		in.stored.Add(uint64(res.Flows))
		in.m.flowsStored.Add(float64(res.Flows))
		in.m.recordsSkipped.Add(float64(res.SkippedRecords))
		owner, _ := b.Owner.(*claimState)
		if errors.Is(err, pgsink.ErrGap) {
			// Should not happen: claims stop at their first dropped batch.
			in.logger.Error("dropping a batch that does not continue from the stored offset; restarting the partition from PostgreSQL's offset", "error", err)
			if owner != nil {
				owner.restart.Store(true)
			}
			continue
		}
		if err != nil {
			in.logger.Warn("shutdown deadline passed before the batch was stored; it will be read again on restart",
				"topic", b.Topic, "partition", b.Partition, "flows", b.Flows())
			continue
		}
		if !in.pgHealthy.Swap(true) {
			in.updateReady()
			in.logger.Info("PostgreSQL writes succeed again")
		}
		in.m.batchFlows.Observe(float64(res.Flows))
		in.m.batchSeconds.Observe(time.Since(start).Seconds())
		if owner != nil && owner.sess.Context().Err() == nil {
			// Kafka's commit only serves lag monitoring: PostgreSQL has the truth.
			owner.sess.MarkOffset(b.Topic, b.Partition, b.End, "")
			in.m.lag.WithLabelValues(b.Topic, strconv.Itoa(int(b.Partition))).Set(float64(max(b.HighWater-b.End, 0)))
		}
		b.Reset(b.Topic, b.Partition) // release its Kafka messages while pooled
		in.free.Put(b)
	}
}

// storeRange stores records [lo, hi) of b. When PostgreSQL refuses the
// content (pgsink.IsContentError), it halves the range until it finds each
// refused record, rejects it (dead-letter topic, then its offset is
// stored without its flows) and stores the others, so bad content costs
// about 2·log2(n) extra transactions per bad record and never blocks the
// partition. The error it returns is transient (or ErrGap, or ctx's);
// Result.Done says how many records from lo are stored.
func (in *Inserter) storeRange(ctx context.Context, b *pgsink.Batch, lo, hi int) (pgsink.Result, error) {
	res, err := in.sink.WriteRecords(ctx, b, lo, hi)
	if err == nil || !pgsink.IsContentError(err) {
		return res, err
	}
	in.countPGError(err)
	lo += res.Done // committed before the refused transaction
	if hi-lo == 1 {
		if err := in.rejectWritten(ctx, b, lo, err); err != nil {
			return res, err
		}
		res.Done++
		return res, nil
	}
	mid := lo + (hi-lo)/2
	for _, r := range [][2]int{{lo, mid}, {mid, hi}} {
		part, err := in.storeRange(ctx, b, r[0], r[1])
		res.Flows += part.Flows
		res.SkippedRecords += part.SkippedRecords
		res.Done += part.Done
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// rejectWritten rejects record i of b, which PostgreSQL refused: it is
// copied to the dead-letter topic first (at least once), then its offset
// is stored so the partition moves on.
func (in *Inserter) rejectWritten(ctx context.Context, b *pgsink.Batch, i int, cause error) error {
	key, value := b.Raw(i)
	msg := &sarama.ConsumerMessage{Topic: b.Topic, Partition: b.Partition, Offset: b.RecordOffset(i), Key: key, Value: value}
	if err := in.sendDeadLetters(ctx, []deadLetter{{msg: msg, reason: ReasonWriteRejected, err: cause}}); err != nil {
		return err
	}
	if err := in.sink.SkipRecord(ctx, b, i); err != nil {
		return err
	}
	in.m.recordsInvalid.WithLabelValues(ReasonWriteRejected).Inc()
	in.invalid.log(ReasonWriteRejected, "PostgreSQL refused a record's flows; rejected it and stored the rest of its batch",
		"topic", b.Topic, "partition", b.Partition, "offset", msg.Offset, "error", cause)
	return nil
}

// maintenanceInterval is how often the maintenance loop wakes: often
// enough to create tomorrow's partition well before midnight, and to retry
// a retention cut short by a long reader.
func (in *Inserter) maintenanceInterval() time.Duration {
	return min(time.Minute, in.cfg.RetentionInterval)
}

// maintenanceLoop keeps today's and tomorrow's partitions created ahead of
// the writers, so crossing midnight takes no DDL in the write path, and
// drops expired partitions every RetentionInterval (sooner again after a
// failure). Its DDL gives way to long readers (lock_timeout) and retries.
func (in *Inserter) maintenanceLoop(ctx context.Context) {
	t := time.NewTicker(in.maintenanceInterval())
	defer t.Stop()
	var nextRetention time.Time // zero: due now
	for {
		now := in.cfg.Now().UTC()
		today := now.Truncate(24 * time.Hour)
		if err := in.sink.EnsurePartitions(ctx, []time.Time{today, today.AddDate(0, 0, 1)}); err != nil && ctx.Err() == nil {
			in.countPGError(err)
			in.logger.Warn("creating today's and tomorrow's partitions failed; will retry", "error", err, "retry_in", in.maintenanceInterval())
		}
		if in.cfg.Retention > 0 && !time.Now().Before(nextRetention) {
			nextRetention = time.Now().Add(in.cfg.RetentionInterval)
			dropped, err := in.sink.DropExpired(ctx, now.Add(-in.cfg.Retention))
			if err != nil && ctx.Err() == nil {
				nextRetention = time.Time{} // retry at the next tick
				in.countPGError(err)
				in.logger.Warn("dropping expired partitions failed; will retry", "error", err, "retry_in", in.maintenanceInterval())
			}
			if len(dropped) > 0 {
				in.m.partitionsDroped.Add(float64(len(dropped)))
				in.logger.Info("dropped expired partitions", "partitions", dropped, "retention", in.cfg.Retention)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
