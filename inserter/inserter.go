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
	Group        string   // default "flow-inserter"
	KafkaVersion string   // default kafka.DefaultVersion; at least 2.1.0
	// DLQTopic, if set, receives a copy of every rejected record, with
	// headers saying why and where it came from (at least once).
	DLQTopic string

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
	Retention         time.Duration
	RetentionInterval time.Duration // how often to check; default 10m

	// Failed writes and connections are retried with exponential backoff
	// from RetryMin (default 100ms) to RetryMax (default 5s), forever.
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the final flush after Run's context ends
	// (default 30s). An unfinished batch is simply re-read on restart.
	ShutdownTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Topic == "" {
		c.Topic = "flows"
	}
	if c.Group == "" {
		c.Group = "flow-inserter"
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
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
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
	if c.DLQTopic != "" && c.DLQTopic == c.Topic {
		errs = append(errs, fmt.Errorf("Config.DLQTopic %q must differ from Config.Topic", c.DLQTopic))
	}
	if c.Writers < 1 || c.Writers > 32 {
		errs = append(errs, fmt.Errorf("Config.Writers %d: want 1 to 32", c.Writers))
	}
	if c.FlushCount < 1 {
		errs = append(errs, fmt.Errorf("Config.FlushCount %d: must be at least 1", c.FlushCount))
	}
	if c.FlushInterval < 0 || c.Retention < 0 || c.RetryMin < 0 || c.RetryMax < c.RetryMin || c.QueuedBatches < 0 {
		errs = append(errs, errors.New("Config.FlushInterval, Config.Retention, Config.RetryMin and Config.QueuedBatches must not be negative, and Config.RetryMax must be at least Config.RetryMin"))
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
	c := Config{Brokers: []string{"127.0.0.1:9092"}}
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
	sink    *pgsink.Sink
	invalid *rateLog

	stored      atomic.Uint64
	schemaReady atomic.Bool
	pgHealthy   atomic.Bool
	kafkaUp     atomic.Bool

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
	sink, err := pgsink.New(pgsink.Config{DSN: cfg.PostgresDSN, Group: cfg.Group, MaxConns: int32(cfg.Writers + 1)}, logger)
	if err != nil {
		return nil, err
	}
	in := &Inserter{
		cfg:     cfg,
		version: version,
		logger:  logger,
		m:       m,
		sink:    sink,
		invalid: newRateLog(logger, 10*time.Second),
	}
	for range cfg.Writers {
		in.batches = append(in.batches, make(chan *pgsink.Batch, cfg.QueuedBatches))
	}
	in.pgHealthy.Store(true)
	return in, nil
}

// Stored is the number of flows this inserter committed to PostgreSQL.
func (in *Inserter) Stored() uint64 { return in.stored.Load() }

// Ready reports whether the schema exists, Kafka is connected and the last
// PostgreSQL write succeeded: /readyz.
func (in *Inserter) Ready() bool {
	return in.schemaReady.Load() && in.kafkaUp.Load() && in.pgHealthy.Load()
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
// at start or later, is retried with backoff, never fatal.
func (in *Inserter) Run(ctx context.Context) error {
	defer in.sink.Close()
	if err := in.startPostgres(ctx); err != nil {
		return nil // ctx ended while waiting: a clean shutdown
	}
	if err := in.startKafka(ctx); err != nil {
		return nil
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
			in.logger.Warn("Kafka consumer error; sarama retries", "error", err)
		}
	})
	if in.cfg.Retention > 0 {
		bg.Go(func() { in.retentionLoop(ctx) })
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

func (in *Inserter) saramaConfig() *sarama.Config {
	sc := kafka.NewConfig("flowpipeline-inserter", in.version)
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Fetch.Default = 1 << 20
	sc.ChannelBufferSize = 256
	// The writer may hold a partition's batch while PostgreSQL is down;
	// give the consume loop time before sarama considers it stuck.
	sc.Consumer.MaxProcessingTime = time.Second
	sc.Metadata.RefreshFrequency = time.Minute
	if in.cfg.DLQTopic != "" {
		sc.Producer.Return.Successes = true
		sc.Producer.RequiredAcks = sarama.WaitForAll
		sc.Producer.MaxMessageBytes = 4 << 20
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
		p, err := sarama.NewSyncProducerFromClient(in.client)
		if err != nil {
			in.client.Close()
			return fmt.Errorf("create the dead-letter producer: %w", err)
		}
		in.dlq = p
	}
	in.kafkaUp.Store(true)
	in.updateReady()
	in.logger.Info("connected to Kafka", "brokers", in.cfg.Brokers, "topic", in.cfg.Topic, "group", in.cfg.Group)
	return nil
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
// a failed transaction stored nothing, so retrying the same batch can
// neither lose nor double a flow.
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
			res, err = in.sink.Write(ctx, b)
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
			in.logger.Warn("storing a batch in PostgreSQL failed; retrying the same batch", "topic", b.Topic, "partition", b.Partition,
				"flows", b.Flows(), "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, in.cfg.RetryMax)
		}
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
		in.stored.Add(uint64(res.Flows))
		in.m.flowsStored.Add(float64(res.Flows))
		in.m.recordsSkipped.Add(float64(res.SkippedRecords))
		in.m.batchFlows.Observe(float64(res.Flows))
		in.m.batchSeconds.Observe(time.Since(start).Seconds())
		if owner != nil && owner.sess.Context().Err() == nil {
			// Kafka's commit only serves lag monitoring: PostgreSQL has the truth.
			owner.sess.MarkOffset(b.Topic, b.Partition, b.End, "")
			in.m.lag.WithLabelValues(b.Topic, strconv.Itoa(int(b.Partition))).Set(float64(max(b.HighWater-b.End, 0)))
		}
		in.free.Put(b)
	}
}

func (in *Inserter) retentionLoop(ctx context.Context) {
	t := time.NewTicker(in.cfg.RetentionInterval)
	defer t.Stop()
	for {
		dropped, err := in.sink.DropExpired(ctx, time.Now().Add(-in.cfg.Retention))
		if err != nil && ctx.Err() == nil {
			in.countPGError(err)
			in.logger.Warn("dropping expired partitions failed; will retry", "error", err, "retry_in", in.cfg.RetentionInterval)
		}
		if len(dropped) > 0 {
			in.m.partitionsDroped.Add(float64(len(dropped)))
			in.logger.Info("dropped expired partitions", "partitions", dropped, "retention", in.cfg.Retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
