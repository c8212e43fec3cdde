package inserter

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// TestReadCommittedSkipsAborted: records of aborted Kafka transactions stay
// in the log; the inserter, reading read_committed, stores exactly the
// flows of the committed ones, on the real broker.
func TestReadCommittedSkipsAborted(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 2)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(topic+"-producer"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := time.Now().Add(-time.Hour)
	var want flowtest.Totals
	var aborted int64
	// Aborted, committed, aborted, committed: every seed numbers its
	// flows apart, so a stored aborted flow would also show in the sums.
	for i, commit := range []bool{false, true, false, true} {
		values, tot := flowtest.Records(int64(i+1), 2000+500*i, 4, base)
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatalf("end transaction %d (commit %v): %v", i, commit, err)
		}
		if commit {
			want.Flows += tot.Flows
			want.Bytes += tot.Bytes
			want.Packets += tot.Packets
		} else {
			aborted += tot.Flows
		}
	}
	r := start(t, Config{Brokers: k.Brokers(), Topic: topic, Group: "g", KafkaVersion: k.Version(), PostgresDSN: dsn,
		FlushCount: 1000, FlushInterval: 100 * time.Millisecond})
	r.waitStored(t, uint64(want.Flows), time.Minute)
	time.Sleep(time.Second) // an aborted flow stored late would show now
	r.stop(t)
	flowtest.Check(t, dsn, want)
	t.Logf("stored %v; %d flows of aborted transactions skipped", want, aborted)
}
