package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TransactSettings are the choices of a consume-transform-produce client
// that commits its output and its consumed offsets in one Kafka
// transaction (kgo.GroupTransactSession).
type TransactSettings struct {
	ClientID        string
	Brokers         []string
	Topic, Group    string // consumed topic and consumer group
	TransactionalID string // stable per instance: a restart fences its predecessor at once
	// TransactionTimeout is how long the broker lets a transaction stay
	// open; a killed instance's transaction that nobody fences is aborted
	// after it, and read_committed readers wait that long behind it.
	TransactionTimeout time.Duration
	SessionTimeout     time.Duration // 0: franz-go's 45 s
	DialTimeout        time.Duration // 0: franz-go's 10 s
}

// TransactOptions builds the franz-go options for s: read_committed input
// (an upstream transactional producer's aborted records are never read),
// stable fetch offsets (KIP-447: a new owner of a partition waits for the
// previous owner's open transaction), no auto-commit (offsets commit only
// inside transactions), and output records partitioned by the number the
// caller stores in Record.Partition, modulo the output's partition count.
func TransactOptions(s TransactSettings) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(slices.Clone(s.Brokers)...),
		kgo.ConsumerGroup(s.Group),
		kgo.ConsumeTopics(s.Topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.DisableAutoCommit(),
		kgo.TransactionalID(s.TransactionalID),
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
			return func(r *kgo.Record, n int) int { return int(r.Partition) % n }
		})),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(1 << 20),
	}
	if s.ClientID != "" {
		opts = append(opts, kgo.ClientID(s.ClientID))
	}
	if s.TransactionTimeout > 0 {
		opts = append(opts, kgo.TransactionTimeout(s.TransactionTimeout))
	}
	if s.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(s.SessionTimeout), kgo.HeartbeatInterval(s.SessionTimeout/10))
	}
	if s.DialTimeout > 0 {
		opts = append(opts, kgo.DialTimeout(s.DialTimeout))
	}
	return opts
}

// WaitReachable returns once a broker answers cl, retrying every second
// (and logging) until ctx ends, so a stage's readiness means something.
func WaitReachable(ctx context.Context, cl *kgo.Client, brokers []string, logger *slog.Logger) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cl.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stopped while waiting for Kafka at %v: %w", brokers, ctx.Err())
		}
		logger.Warn("Kafka not reachable yet; retrying (check Config.Brokers)", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
