package enricher

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the pipeline's configuration. Start from DefaultConfig.
type Config struct {
	Brokers  []string
	Topic    string // consumed: length-delimited FlowMessages
	Group    string // consumer group; instances in one group share the partitions
	OutTopic string // produced: the enriched messages, same framing
	DLQTopic string // undecodable records are copied here, in the same transaction (empty: counted and dropped)
	// TransactionalID identifies this instance's producer. It must be
	// stable across restarts of one instance (a restart then fences and
	// aborts its killed predecessor's open transaction at once) and
	// distinct between instances that run at the same time.
	TransactionalID string
	// TransactionInterval is how long a transaction stays open at most: the
	// output becomes visible to read_committed readers at its commit, so it
	// is the latency the enricher adds (half of it on average).
	TransactionInterval time.Duration
	// TransactionRecords and TransactionBytes commit sooner, at this many
	// input records or output bytes.
	TransactionRecords int
	TransactionBytes   int
	// TransactionTimeout: the broker aborts a transaction open this long.
	TransactionTimeout time.Duration
	SessionTimeout     time.Duration // consumer group session
	ShutdownTimeout    time.Duration // commit the open transaction within this on shutdown
}

// DefaultConfig works with the compose files.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "enricher"
	}
	return Config{
		Brokers:             []string{"127.0.0.1:9092"},
		Topic:               "flows",
		Group:               "enricher",
		OutTopic:            "flows-enriched",
		TransactionalID:     "enricher-" + host,
		TransactionInterval: time.Second,
		TransactionRecords:  20000,
		TransactionBytes:    32 << 20,
		TransactionTimeout:  30 * time.Second,
		SessionTimeout:      10 * time.Second,
		ShutdownTimeout:     10 * time.Second,
	}
}

// ErrInvalidConfig is what Validate's errors wrap.
var ErrInvalidConfig = errors.New("invalid enricher configuration")

// Validate checks every field and names the faulty ones.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if len(c.Brokers) == 0 {
		bad("Config.Brokers is empty; give at least one host:port")
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			bad("Config.Brokers: %q is not host:port", b)
		}
	}
	if c.Topic == "" {
		bad("Config.Topic is empty")
	}
	if c.Group == "" {
		bad("Config.Group is empty")
	}
	if c.OutTopic == "" {
		bad("Config.OutTopic is empty")
	}
	if c.OutTopic != "" && (c.OutTopic == c.Topic || c.DLQTopic == c.Topic) {
		bad("Config.OutTopic and Config.DLQTopic must differ from Config.Topic, or the enricher reads its own output")
	}
	if c.TransactionalID == "" {
		bad("Config.TransactionalID is empty; give each instance a stable, unique id")
	}
	if c.TransactionInterval <= 0 {
		bad("Config.TransactionInterval %s must be positive", c.TransactionInterval)
	}
	if c.TransactionRecords <= 0 || c.TransactionBytes <= 0 {
		bad("Config.TransactionRecords %d and Config.TransactionBytes %d must be positive", c.TransactionRecords, c.TransactionBytes)
	}
	if c.TransactionTimeout < 2*c.TransactionInterval {
		bad("Config.TransactionTimeout %s must be at least twice Config.TransactionInterval %s", c.TransactionTimeout, c.TransactionInterval)
	}
	if c.SessionTimeout < time.Second {
		bad("Config.SessionTimeout %s must be at least 1s", c.SessionTimeout)
	}
	if c.ShutdownTimeout <= 0 {
		bad("Config.ShutdownTimeout %s must be positive", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}
