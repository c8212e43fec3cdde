package mocker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Config configures a Mocker. Start from DefaultConfig; in a Config built
// from scratch, zero fields take DefaultConfig's values, except Brokers
// (required) and Rate, Count and Seed, whose zero means what they say.
type Config struct {
	Brokers      []string // required for OutputKafka, host:port; default 127.0.0.1:9092
	Topic        string   // default "flows"
	KafkaVersion string   // default kafka.DefaultVersion; at least 2.1.0
	// Rate is the target in flows per second; 0 sends as fast as possible.
	Rate float64 // default 1000
	// Count is how many flows to have acknowledged before Run returns;
	// 0 runs until the context ends.
	Count uint64
	Seed  int64 // generator seed: same seed, same flows (except times); default 1
	// Compression is none, gzip, snappy, lz4 or zstd (default none, like goflow2).
	Compression string
	ClientID    string // default "flowpipeline-mocker"
	// ConnectTimeout bounds the wait for Kafka (and the topic) at start.
	ConnectTimeout time.Duration // default 10s
	// ProgressInterval is how often progress is logged; negative disables.
	ProgressInterval time.Duration // default 5s
	// ShutdownTimeout bounds the flush of in-flight flows when stopping.
	ShutdownTimeout time.Duration // default 10s
	// MaxInFlight bounds flows handed to the producer and not yet acked
	// (rounded down to whole records, at least one record).
	MaxInFlight int // default 100000
	// FlowsPerRecord is how many length-delimited flows each Kafka record
	// carries, 1 to MaxFlowsPerRecord. The default 1 is goflow2's framing
	// (-format=bin); more cut the per-record cost of the producer and the
	// broker for load tests, and the inserter and ClickHouse's Protobuf
	// format read several per record. With Count, the last record carries
	// what is left. Records stay round-robin over the partitions.
	FlowsPerRecord int // default 1
	// FlushBytes and FlushFrequency trigger sending a batch to the broker.
	FlushBytes     int           // default 1 MiB
	FlushFrequency time.Duration // default 5ms
	// Addresses is the address plan: AddressesRealistic (default) or
	// AddressesDocumentation.
	Addresses string
	// NetworksFile and ExportersFile are the realistic plan's networks file
	// (customer prefixes) and exporters file (exporters and interfaces), in
	// the enricher's formats; empty means the embedded demo file
	// (config/demo-networks.yml, config/demo-exporters.yml).
	NetworksFile, ExportersFile string
	// Output is where flows go: OutputKafka (default), or the datagrams of
	// a router protocol, OutputNetFlowV9, OutputIPFIX or OutputSFlow, sent
	// to Collector (packet.go).
	Output string
	// Collector is the host:port the router protocols are sent to; empty
	// means DefaultCollector(Output).
	Collector string
	// Attacks are added to the normal traffic (realistic plan only); see
	// attack.go. Their flows come on top of Rate.
	Attacks []Attack
	// SimulateStart, when set, stamps flows with a simulated clock that
	// starts there and advances 1/Rate per normal flow, and sends as fast
	// as possible: minutes of event time in seconds. Needs Rate > 0.
	SimulateStart time.Time
}

// DefaultConfig is the configuration the mocker binary runs with when no
// flag is given: the flags take their defaults from it.
func DefaultConfig() Config {
	return Config{
		Brokers:          []string{"127.0.0.1:9092"},
		Topic:            "flows",
		KafkaVersion:     kafka.DefaultVersion,
		Rate:             1000,
		Seed:             1,
		Compression:      "none",
		ClientID:         "flowpipeline-mocker",
		ConnectTimeout:   10 * time.Second,
		ProgressInterval: 5 * time.Second,
		ShutdownTimeout:  10 * time.Second,
		MaxInFlight:      100000,
		FlowsPerRecord:   1,
		FlushBytes:       1 << 20,
		FlushFrequency:   5 * time.Millisecond,
		Addresses:        AddressesRealistic,
		Output:           OutputKafka,
	}
}

// withDefaults fills the zero fields that have no meaning of their own.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	fill(&c.Topic, d.Topic)
	fill(&c.KafkaVersion, d.KafkaVersion)
	fill(&c.Compression, d.Compression)
	fill(&c.ClientID, d.ClientID)
	fill(&c.ConnectTimeout, d.ConnectTimeout)
	fill(&c.ProgressInterval, d.ProgressInterval)
	fill(&c.ShutdownTimeout, d.ShutdownTimeout)
	fill(&c.MaxInFlight, d.MaxInFlight)
	fill(&c.FlushBytes, d.FlushBytes)
	fill(&c.FlushFrequency, d.FlushFrequency)
	fill(&c.FlowsPerRecord, d.FlowsPerRecord)
	fill(&c.Addresses, d.Addresses)
	fill(&c.Output, d.Output)
	return c
}

func fill[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// MaxFlowsPerRecord bounds Config.FlowsPerRecord: records of a few hundred
// kilobytes at most, well under the producer's message size limit.
const MaxFlowsPerRecord = 1000

const (
	// maxFlowBytes bounds one generated flow with its length prefix
	// (TestMaxFlowBytes checks it on a worst-case flow); most are ~100 bytes.
	maxFlowBytes = 512
	// maxMessageBytes is the producer's Producer.MaxMessageBytes (sarama's
	// default, just under the broker's default message.max.bytes).
	maxMessageBytes = 1 << 20
	// recordOverhead bounds what sarama adds to a value when it checks a
	// record against maxMessageBytes (its maximumRecordOverhead is 36).
	recordOverhead = 64
)

// CheckFlowsPerRecord reports whether n flows per record is allowed. Config
// takes 0 for the default 1; a command-line flag set to 0 should be refused
// with this error.
func CheckFlowsPerRecord(n int) error {
	if n < 1 || n > MaxFlowsPerRecord {
		return fmt.Errorf("Config.FlowsPerRecord %d: want 1 to %d flows per Kafka record (1 = one per record, like goflow2)",
			n, MaxFlowsPerRecord)
	}
	if size := n*maxFlowBytes + recordOverhead; size > maxMessageBytes {
		return fmt.Errorf("Config.FlowsPerRecord %d: records of up to %d bytes exceed the producer's %d-byte message limit",
			n, size, maxMessageBytes)
	}
	return nil
}

// ErrInvalidConfig is what Validate's errors wrap, and so New's when the
// configuration is at fault: a command line maps it to its usage exit code.
var ErrInvalidConfig = errors.New("invalid mocker configuration")

// Validate reports every invalid setting (after the defaults of zero
// fields are applied), naming the Config fields at fault.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if len(c.Brokers) == 0 && c.Output == OutputKafka {
		errs = append(errs, errors.New("Config.Brokers is empty: want Kafka brokers as host:port"))
	}
	if _, err := kafka.ParseVersion(c.KafkaVersion); err != nil {
		errs = append(errs, fmt.Errorf("Config.KafkaVersion: %w", err))
	}
	if math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0 {
		errs = append(errs, fmt.Errorf("Config.Rate %v: want flows per second >= 0 (0 = as fast as possible)", c.Rate))
	}
	if _, err := kafka.ParseCompression(c.Compression); err != nil {
		errs = append(errs, fmt.Errorf("Config.Compression %q: want %s", c.Compression, kafka.CompressionNames))
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"ConnectTimeout", c.ConnectTimeout}, {"ShutdownTimeout", c.ShutdownTimeout}, {"FlushFrequency", c.FlushFrequency}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %s: must not be negative", d.field, d.v))
		}
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("Config.MaxInFlight %d: must not be negative", c.MaxInFlight))
	}
	if c.FlushBytes < 0 {
		errs = append(errs, fmt.Errorf("Config.FlushBytes %d: must not be negative", c.FlushBytes))
	}
	if err := CheckFlowsPerRecord(c.FlowsPerRecord); err != nil {
		errs = append(errs, err)
	}
	switch c.Addresses {
	case AddressesRealistic:
	case AddressesDocumentation:
		if c.NetworksFile != "" || c.ExportersFile != "" {
			errs = append(errs, fmt.Errorf("Config.NetworksFile and Config.ExportersFile are for the %s address plan; the %s plan has its own, so leave them empty",
				AddressesRealistic, AddressesDocumentation))
		}
	default:
		errs = append(errs, fmt.Errorf("Config.Addresses %q: want %s (real public prefixes) or %s (documentation space only)",
			c.Addresses, AddressesRealistic, AddressesDocumentation))
	}
	errs = append(errs, c.validateOutput()...)
	errs = append(errs, c.validateAttacks()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

// Mocker sends generated flows to Kafka. New is inert; Run connects.
type Mocker struct {
	cfg     Config
	version sarama.KafkaVersion
	logger  *slog.Logger
	metrics *metrics
	plan    *Plan // the realistic plan; nil for the documentation one
	truth   *truth

	lastSendErr atomic.Int64 // unix ns of the last logged datagram send error

	started  atomic.Bool
	ready    atomic.Bool
	sent     atomic.Uint64 // distinct flows handed to the producer
	produced atomic.Uint64 // flows acknowledged by the broker
	inFlight atomic.Int64
	mix      atomic.Pointer[attackMix] // the attacks of the running Run; nil: none
}

// New checks cfg (see Validate) and registers the metrics on reg.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Mocker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	version, _ := kafka.ParseVersion(cfg.KafkaVersion) // checked by Validate
	m := &Mocker{cfg: cfg, version: version, logger: logger}
	var err error
	if cfg.Addresses == AddressesRealistic {
		if m.plan, err = LoadPlan(cfg.NetworksFile, cfg.ExportersFile, os.ReadFile); err != nil {
			return nil, fmt.Errorf("%w: %w (Config.NetworksFile, Config.ExportersFile)", ErrInvalidConfig, err)
		}
	}
	m.metrics, err = newMetrics(reg, func() float64 { return float64(m.inFlight.Load()) })
	if err == nil {
		m.truth = newTruth()
		err = reg.Register(m.truth)
	}
	if err != nil {
		return nil, fmt.Errorf("registering mocker metrics: %w", err)
	}
	return m, nil
}

// Produced is the number of flows Kafka has acknowledged so far.
func (m *Mocker) Produced() uint64 { return m.produced.Load() }

// Sent is the number of distinct flows handed to the producer so far
// (re-sends of failed deliveries are not counted again).
func (m *Mocker) Sent() uint64 { return m.sent.Load() }

// Ready reports whether Run is connected and producing (for /readyz).
func (m *Mocker) Ready() bool { return m.ready.Load() }

// record is a Kafka record value: flows length-delimited flows in buf. A
// pointer, so storing it in the sarama.Encoder interface does not allocate;
// it stays with its ProducerMessage from send to ack, failure and re-send.
type record struct {
	buf   []byte
	flows int
	tally []Counts // by exporter: the flows of buf, for the Summary
}

func (r *record) Encode() ([]byte, error) { return r.buf, nil }
func (r *record) Length() int             { return len(r.buf) }

func (m *Mocker) saramaConfig(idempotent bool) *sarama.Config {
	codec, _ := kafka.ParseCompression(m.cfg.Compression) // checked by Validate
	c := kafka.NewConfig(m.cfg.ClientID, m.version,
		kafka.DialTimeout(5*time.Second),
		kafka.Producer(kafka.ProducerSettings{
			// The broker drops duplicates of retried batches (when it allows
			// idempotent producers: see connect).
			Idempotent:      idempotent,
			Compression:     codec,
			MaxMessageBytes: maxMessageBytes, // what CheckFlowsPerRecord assumes
			// Round robin, like goflow2 without -transport.kafka.hashing:
			// flows carry no ordering that consumers rely on, and every
			// partition gets an equal share whatever the mix of exporters.
			RoundRobin: true,
		}))
	c.Producer.Flush.Bytes = m.cfg.FlushBytes
	c.Producer.Flush.Frequency = m.cfg.FlushFrequency
	// Measured with BenchmarkProduce: 1024 beat both sarama's 256 and 8192
	// (larger buffers cost more in cache misses than they save in wakeups).
	c.ChannelBufferSize = 1024
	// Ride out broker restarts: keep retrying with a capped backoff rather
	// than failing records (failed ones are re-sent anyway).
	backoff := func(retries, _ int) time.Duration {
		return min(100*time.Millisecond<<min(retries, 5), 2*time.Second)
	}
	c.Producer.Retry.Max = 1000
	c.Producer.Retry.BackoffFunc = backoff
	c.Metadata.Retry.Max = 1000
	c.Metadata.Retry.BackoffFunc = backoff
	return c
}

// waitForKafka fails fast and clearly when no broker answers or the topic
// cannot be used, instead of letting the producer retry forever.
func (m *Mocker) waitForKafka(ctx context.Context) error {
	base := kafka.NewConfig(m.cfg.ClientID, m.version, kafka.DialTimeout(5*time.Second))
	err := kafka.WaitForTopic(ctx, m.cfg.Brokers, m.cfg.Topic, base, m.cfg.ConnectTimeout)
	switch {
	case errors.Is(err, kafka.ErrUnreachable):
		return fmt.Errorf("%w (check Config.Brokers)", err)
	case errors.Is(err, kafka.ErrTopic):
		return fmt.Errorf("%w (check Config.Topic)", err)
	}
	return err
}

func (m *Mocker) connect(ctx context.Context) (sarama.AsyncProducer, error) {
	if err := m.waitForKafka(ctx); err != nil {
		return nil, err
	}
	producer, err := sarama.NewAsyncProducer(m.cfg.Brokers, m.saramaConfig(true))
	if err == nil {
		return producer, nil
	}
	// Brokers without idempotence (or forbidding IdempotentWrite) refuse a
	// producer id; plain acks=all with retries still delivers every flow,
	// at the risk of duplicates on retry.
	m.logger.Warn("Kafka refused an idempotent producer; continuing without idempotence (retries may duplicate flows)",
		"error", err)
	producer, err2 := sarama.NewAsyncProducer(m.cfg.Brokers, m.saramaConfig(false))
	if err2 != nil {
		return nil, fmt.Errorf("cannot start a Kafka producer for %s: %w", strings.Join(m.cfg.Brokers, ","), errors.Join(err, err2))
	}
	return producer, nil
}

// Run produces flows until Count flows are acknowledged (Count > 0) or ctx
// ends; then it flushes what is in flight and returns nil. It returns an
// error when Kafka or the topic cannot be reached within ConnectTimeout at
// start. Call it once.
func (m *Mocker) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("mocker: Run called twice")
	}
	defer m.truth.end()
	if m.cfg.Output != OutputKafka {
		return m.runPackets(ctx)
	}
	producer, err := m.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			m.logger.Info("mocker stopped before Kafka was reachable", "error", err)
			return nil // asked to stop: not a failure
		}
		return err
	}
	m.ready.Store(true)
	defer m.ready.Store(false)
	start := time.Now()
	m.logger.Info("producing flows", "brokers", strings.Join(m.cfg.Brokers, ","), "topic", m.cfg.Topic,
		"rate", m.cfg.Rate, "count", m.cfg.Count, "seed", m.cfg.Seed, "compression", m.cfg.Compression,
		"flows_per_record", m.cfg.FlowsPerRecord)

	// MaxInFlight counts flows; the queues hold records.
	maxRecords := max(1, m.cfg.MaxInFlight/m.cfg.FlowsPerRecord)
	r := &runState{
		m:          m,
		producer:   producer,
		maxRecords: maxRecords,
		free:       make(chan *sarama.ProducerMessage, maxRecords),
		retry:      make(chan *sarama.ProducerMessage, maxRecords),
		allAcked:   make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.drain() }()
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if m.cfg.ProgressInterval > 0 {
		progressWG.Add(1)
		go func() { defer progressWG.Done(); m.progress(progressDone) }()
	}

	r.produce(ctx)

	// Stop re-sending: from here a failure is final.
	r.stopping.Store(true)
	producer.AsyncClose()
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(m.cfg.ShutdownTimeout):
		m.logger.Warn("gave up flushing in-flight flows", "timeout", m.cfg.ShutdownTimeout,
			"in_flight", m.inFlight.Load())
	}
	close(progressDone)
	progressWG.Wait()

	for _, a := range m.AttackSummaries() {
		m.logger.Info("attack injected", "target", a.Target, "vector", a.Vector, "start", a.Start, "end", a.End,
			"flows", a.Flows, "scaled_packets", a.ScaledPackets, "scaled_bytes", a.ScaledBytes)
	}
	elapsed := time.Since(start)
	produced := m.produced.Load()
	m.logger.Info("mocker stopped", "produced", produced, "sent", m.sent.Load(),
		"elapsed", elapsed.Round(time.Millisecond), "flows_per_s", math.Round(float64(produced)/elapsed.Seconds()))
	return nil
}

func (m *Mocker) progress(done <-chan struct{}) {
	t := time.NewTicker(m.cfg.ProgressInterval)
	defer t.Stop()
	last, lastT := m.produced.Load(), time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			p := m.produced.Load()
			m.logger.Info("progress", "produced", p,
				"flows_per_s", math.Round(float64(p-last)/now.Sub(lastT).Seconds()),
				"in_flight", m.inFlight.Load())
			last, lastT = p, now
		}
	}
}

// runState is one Run: a producing loop (produce) and a loop reading the
// producer's acks and errors (drain), linked by the free and retry queues.
type runState struct {
	m          *Mocker
	producer   sarama.AsyncProducer
	maxRecords int                          // messages allocated at most
	free       chan *sarama.ProducerMessage // acked messages, for reuse
	retry      chan *sarama.ProducerMessage // failed messages, to re-send
	allAcked   chan struct{}                // closed when Count flows are acked
	stopping   atomic.Bool
	lastErr    atomic.Int64 // unix ns of the last logged delivery error
}

// drain counts acks and failures, in flows, until the producer closes its
// channels. Both queues hold maxRecords messages, so pushing never blocks.
func (r *runState) drain() {
	m := r.m
	successes, errs := r.producer.Successes(), r.producer.Errors()
	for successes != nil || errs != nil {
		select {
		case msg, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			rec := msg.Value.(*record)
			flows := uint64(rec.flows)
			m.countRecord(rec.tally)
			m.inFlight.Add(-int64(flows))
			m.metrics.produced.Add(float64(flows))
			m.metrics.bytes.Add(float64(len(rec.buf)))
			// Records never cross Count (the last one is cut short), so the
			// total reaches it exactly; >= guards the close all the same.
			if n := m.produced.Add(flows); n >= m.cfg.Count && n-flows < m.cfg.Count {
				close(r.allAcked)
			}
			r.free <- msg
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			flows := pe.Msg.Value.(*record).flows
			m.inFlight.Add(-int64(flows))
			if r.stopping.Load() {
				m.metrics.failed.WithLabelValues(reasonShutdown).Add(float64(flows))
				continue
			}
			reason := failureReason(pe.Err)
			m.metrics.failed.WithLabelValues(reason).Add(float64(flows))
			// One log line per second at most, not one per flow.
			if now := time.Now().UnixNano(); now-r.lastErr.Load() > int64(time.Second) {
				r.lastErr.Store(now)
				m.logger.Warn("flow delivery failed; re-sending", "reason", reason, "error", pe.Err)
			}
			r.retry <- pe.Msg
		}
	}
}

// produce generates and sends flows until Count are acked or ctx ends.
func (r *runState) produce(ctx context.Context) {
	m := r.m
	cfg := &m.cfg
	gen := m.newGenerator()
	infos := exporterInfos(gen, m.plan)
	m.kafkaTruth(infos)
	src := m.newFlowSource(gen)
	var flow pb.FlowMessage
	input := r.producer.Input()
	allocated := 0
	var timer *time.Timer
	start := time.Now()
	var scheduled uint64 // flows the rate schedule has released since start

	perRecord := uint64(cfg.FlowsPerRecord)

	send := func(msg *sarama.ProducerMessage) bool {
		flows := int64(msg.Value.(*record).flows)
		m.inFlight.Add(flows)
		select { // the common case, without the cost of a two-way select
		case input <- msg:
			return true
		default:
		}
		select {
		case input <- msg:
			return true
		case <-ctx.Done():
			m.inFlight.Add(-flows)
			return false
		}
	}
	resend := func(msg *sarama.ProducerMessage) bool {
		// A fresh message: sarama keeps retry counts and sequence state in
		// it. The record, and so its flows, stay the same.
		*msg = sarama.ProducerMessage{Topic: msg.Topic, Value: msg.Value}
		m.metrics.resent.Add(float64(msg.Value.(*record).flows))
		return send(msg)
	}

	for {
		generating := cfg.Count == 0 || m.sent.Load() < cfg.Count
		if !generating {
			// Everything is sent; re-send failures until all are acked.
			select {
			case <-r.allAcked:
				return
			case <-ctx.Done():
				return
			case msg := <-r.retry:
				if !resend(msg) {
					return
				}
			}
			continue
		}

		select {
		case msg := <-r.retry:
			if !resend(msg) {
				return
			}
			continue
		case <-ctx.Done():
			return
		default:
		}

		// The next record's flows; with Count, the last record carries what
		// is left so that exactly Count flows are sent.
		flows := perRecord
		if cfg.Count > 0 {
			flows = min(flows, cfg.Count-m.sent.Load())
		}

		now := time.Now()
		if cfg.Rate > 0 && cfg.SimulateStart.IsZero() {
			// Pace flows, not records: a record goes once its last flow is
			// due, so no flow leaves ahead of the schedule.
			last := scheduled + flows - 1
			due := start.Add(time.Duration(float64(last) / cfg.Rate * float64(time.Second)))
			if wait := due.Sub(now); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case msg := <-r.retry:
					timer.Stop()
					if !resend(msg) {
						return
					}
					continue
				case <-ctx.Done():
					return
				}
				now = time.Now()
			} else if wait < -time.Second {
				// Far behind (the broker was away): restart the schedule
				// rather than bursting to catch up.
				start = now.Add(-time.Duration(float64(last) / cfg.Rate * float64(time.Second)))
			}
		}

		var msg *sarama.ProducerMessage
		select {
		case msg = <-r.free:
		default:
			if allocated < r.maxRecords {
				allocated++
				msg = &sarama.ProducerMessage{Value: &record{buf: make([]byte, 0, 256*cfg.FlowsPerRecord),
					tally: make([]Counts, len(infos))}}
			} else {
				select {
				case msg = <-r.free:
				case msg2 := <-r.retry:
					if !resend(msg2) {
						return
					}
					continue
				case <-ctx.Done():
					return
				}
				now = time.Now()
			}
		}

		rec := msg.Value.(*record)
		clear(rec.tally)
		var normal uint64
		rec.buf, normal = src.appendFlows(rec.buf[:0], &flow, flows, now, infos, rec.tally)
		rec.flows = int(flows)
		*msg = sarama.ProducerMessage{Topic: cfg.Topic, Value: rec}
		if !send(msg) {
			return
		}
		scheduled += normal // attack flows come on top of the rate
		m.sent.Add(flows)
	}
}
