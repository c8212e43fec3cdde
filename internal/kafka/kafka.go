// Package kafka is what every flow-pipeline component shares to talk to
// Kafka through sarama: the protocol version floor, the base client
// configuration (the only sarama.NewConfig in the module), waiting for a
// topic, and reading end offsets. It sits at the bottom of the import
// graph: it imports nothing from this module.
//
// Errors here describe what failed; they name neither command-line flags
// nor a component's Config fields, which callers add.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// DefaultVersion is the protocol version spoken to brokers by default.
// Kafka 4 rejects requests older than the 2.1 baseline (KIP-896), so never go
// below MinVersion.
const DefaultVersion = "3.9.0"

// MinVersion is the oldest protocol version Kafka 4 brokers accept.
var MinVersion = sarama.V2_1_0_0

// ParseVersion parses a Kafka protocol version and checks it against the
// Kafka 4 floor (MinVersion).
func ParseVersion(s string) (sarama.KafkaVersion, error) {
	v, err := sarama.ParseKafkaVersion(s)
	if err != nil {
		return v, fmt.Errorf("Kafka version %q: %w", s, err)
	}
	if !v.IsAtLeast(MinVersion) {
		return v, fmt.Errorf("Kafka version %q: must be at least 2.1.0; Kafka 4 brokers reject older protocol versions", s)
	}
	return v, nil
}

func defaultVersion() sarama.KafkaVersion {
	v, err := ParseVersion(DefaultVersion)
	if err != nil {
		panic(err) // a constant: TestDefaultVersion
	}
	return v
}

// Option adjusts a configuration built by NewConfig.
type Option func(*sarama.Config)

// NewConfig is the base sarama configuration every client of the module
// starts from: a client ID, a protocol version (the zero value means
// DefaultVersion), then opts in order. Callers may set more fields on the
// result.
func NewConfig(clientID string, version sarama.KafkaVersion, opts ...Option) *sarama.Config {
	c := sarama.NewConfig()
	if clientID != "" {
		c.ClientID = clientID
	}
	if version == (sarama.KafkaVersion{}) {
		version = defaultVersion()
	}
	c.Version = version
	for _, o := range opts {
		o(c)
	}
	return c
}

// DialTimeout bounds each connection attempt to a broker.
func DialTimeout(d time.Duration) Option {
	return func(c *sarama.Config) { c.Net.DialTimeout = d }
}

// Consumer sets what every consumer here needs: errors returned on the
// consumer's Errors channel (so they are counted, not only logged; the
// caller must drain that channel, or sarama blocks) and
// where a partition with no committed offset starts (sarama.OffsetOldest
// or sarama.OffsetNewest).
func Consumer(initial int64) Option {
	return func(c *sarama.Config) {
		c.Consumer.Return.Errors = true
		c.Consumer.Offsets.Initial = initial
	}
}

// ProducerSettings are the producer choices that differ between clients.
// Every producer waits for all in-sync replicas and returns successes and
// errors, so a caller counts exactly what Kafka acknowledged.
type ProducerSettings struct {
	// Idempotent makes the broker drop duplicates of retried batches; it
	// needs one request in flight per broker, which it sets.
	Idempotent bool
	// MaxMessageBytes bounds one record batch; 0 keeps sarama's 1 MB.
	MaxMessageBytes int
	// RoundRobin spreads records over the partitions in turn, like goflow2
	// without key hashing; otherwise sarama hashes the key.
	RoundRobin bool
	// Compression of record batches; the zero value is none.
	Compression sarama.CompressionCodec
}

// Producer configures the producer side.
func Producer(p ProducerSettings) Option {
	return func(c *sarama.Config) {
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Return.Successes = true
		c.Producer.Return.Errors = true
		c.Producer.Compression = p.Compression
		if p.MaxMessageBytes > 0 {
			c.Producer.MaxMessageBytes = p.MaxMessageBytes
		}
		if p.RoundRobin {
			c.Producer.Partitioner = sarama.NewRoundRobinPartitioner
		}
		if p.Idempotent {
			c.Producer.Idempotent = true
			c.Net.MaxOpenRequests = 1
		}
	}
}

var codecs = map[string]sarama.CompressionCodec{
	"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
	"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
}

// CompressionNames lists the names ParseCompression accepts.
const CompressionNames = "none, gzip, snappy, lz4 or zstd"

// ParseCompression reads a compression name (see CompressionNames).
func ParseCompression(name string) (sarama.CompressionCodec, error) {
	c, ok := codecs[name]
	if !ok {
		return 0, fmt.Errorf("compression %q: want %s", name, CompressionNames)
	}
	return c, nil
}

// Errors of WaitForTopic, for errors.Is: callers add which setting to check.
var (
	ErrUnreachable = errors.New("no Kafka broker answered")
	ErrTopic       = errors.New("the topic cannot be used")
)

// Connect returns a client once a broker answers and topic has partitions
// (asking for them creates the topic on brokers that auto-create topics; a
// new topic needs a moment for a leader). It retries until timeout, then
// fails clearly instead of letting a producer retry forever. cfg is a
// NewConfig result; Connect uses a copy with metadata retries off and
// dial attempts bounded by the timeout.
func Connect(ctx context.Context, brokers []string, topic string, cfg *sarama.Config, timeout time.Duration) (sarama.Client, error) {
	c := *cfg
	c.Net.DialTimeout = min(timeout, c.Net.DialTimeout)
	c.Metadata.Retry.Max = 0
	addrs := strings.Join(brokers, ",")
	deadline := time.Now().Add(timeout)
	for {
		client, err := sarama.NewClient(slices.Clone(brokers), &c)
		if err == nil {
			var parts []int32
			parts, err = client.Partitions(topic)
			if err == nil && len(parts) > 0 {
				return client, nil
			}
			client.Close()
			if err == nil {
				err = errors.New("topic has no partitions")
			}
			if !time.Now().Before(deadline) {
				return nil, fmt.Errorf("cannot use topic %q on Kafka at %s after %s — create it or check its name: %w: %w",
					topic, addrs, timeout, ErrTopic, err)
			}
		} else if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("cannot reach Kafka at %s within %s — is the broker running? %w: %w",
				addrs, timeout, ErrUnreachable, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped while waiting for Kafka at %s: %w", addrs, ctx.Err())
		case <-time.After(min(500*time.Millisecond, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// WaitForTopic is Connect without keeping the client.
func WaitForTopic(ctx context.Context, brokers []string, topic string, cfg *sarama.Config, timeout time.Duration) error {
	client, err := Connect(ctx, brokers, topic, cfg, timeout)
	if err != nil {
		return err
	}
	return client.Close()
}

// EndOffsets returns the next offset of every partition of topic: where a
// consumer that starts now begins, and the sum of which is every record
// the topic ever had.
func EndOffsets(client sarama.Client, topic string) (map[int32]int64, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", topic, err)
	}
	ends := make(map[int32]int64, len(parts))
	for _, p := range parts {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("read the end offset of %s/%d: %w", topic, p, err)
		}
		ends[p] = off
	}
	return ends, nil
}
