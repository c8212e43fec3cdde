package mocker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// TestBrokerRestart stops the real broker in the middle of a run and starts
// it again: Run must still end with Count flows acknowledged, and every
// generated flow must be on the topic.
func TestBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and restarts a real Kafka broker")
	}
	k := testenv.StartKafka(t)
	t.Logf("broker: %s", k.Name())
	k.CreateTopic(t, "flows", 3)
	const n = 30_000
	m, _ := newMocker(t, Config{Brokers: k.Brokers(), Count: n, Rate: 5000, Seed: 11,
		KafkaVersion: k.SaramaVersion().String(), ProgressInterval: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()

	for m.Produced() < n/5 {
		select {
		case err := <-done:
			t.Fatalf("Run ended early (%v) after %d flows", err, m.Produced())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("stopping the broker after %d acked flows", m.Produced())
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	atStop := m.Produced()
	time.Sleep(3 * time.Second)
	if got := m.Produced(); got != atStop {
		t.Logf("%d more flows acked while the broker was stopping", got-atStop)
	}
	if err := k.Start(); err != nil {
		t.Fatalf("restart the broker: %v", err)
	}
	t.Logf("broker restarted; %d flows acked so far", m.Produced())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.Produced() != n {
		t.Fatalf("Run returned with %d flows acked, want %d", m.Produced(), n)
	}
	for _, r := range []string{reasonBrokerUnavailable, reasonTimeout, reasonNetwork, reasonSequence, reasonOther, reasonUnknownTopic} {
		if c := testutil.ToFloat64(m.metrics.failed.WithLabelValues(r)); c > 0 {
			t.Logf("failed deliveries (re-sent), reason %s: %.0f", r, c)
		}
	}

	ids, _, stats := readBack(t, k.Brokers(), "flows")
	want := expectedIDs(11, n)
	missing := 0
	for id := range want {
		if ids[id] == 0 {
			missing++
		}
	}
	for id := range ids {
		if !want[id] {
			t.Errorf("flow %v on the topic was never generated", id)
		}
	}
	dups := stats.n - len(ids)
	t.Logf("topic holds %d records: %d distinct flows, %d duplicates, %d missing", stats.n, len(ids), dups, missing)
	if missing != 0 {
		t.Fatalf("%d generated flows are missing from the topic", missing)
	}
	if stats.n != n {
		t.Errorf("topic holds %d records, want exactly %d (%d duplicates despite the idempotent producer)", stats.n, n, dups)
	}
}
