package testenv_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// recorder is a testing.TB whose Skipf and Fatalf only record, to test what
// testenv reports without ending the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		require            string
		wantSkip, wantFail bool
	}{
		{require: "", wantSkip: true},
		{require: "0", wantSkip: true},
		{require: "1", wantFail: true},
	} {
		t.Run("require="+tc.require, func(t *testing.T) {
			t.Setenv("FLOWPIPELINE_REQUIRE_SERVICES", tc.require)
			r := &recorder{TB: t}
			testenv.Unavailable(r, "real Kafka unavailable: %s", "no jars")
			if got := r.skipped != ""; got != tc.wantSkip {
				t.Errorf("skipped = %q, want skip %v", r.skipped, tc.wantSkip)
			}
			if got := r.failed != ""; got != tc.wantFail {
				t.Errorf("failed = %q, want fail %v", r.failed, tc.wantFail)
			}
			if msg := r.skipped + r.failed; !strings.Contains(msg, "real Kafka unavailable: no jars") {
				t.Errorf("message %q lacks the reason", msg)
			}
		})
	}
}

// Missing jars must be a loud skip that says how to get them, not a failure
// deep inside a JVM start.
func TestStartKafkaWithoutJars(t *testing.T) {
	t.Setenv("FLOWPIPELINE_REQUIRE_SERVICES", "")
	t.Setenv("FLOWPIPELINE_KAFKA_LIBS", t.TempDir())
	r := &recorder{TB: t}
	if k := testenv.StartKafka(r); k != nil {
		t.Fatalf("StartKafka without jars returned a broker")
	}
	if !strings.HasPrefix(r.skipped, "SKIPPED: real Kafka unavailable") || !strings.Contains(r.skipped, "make kafka-libs") {
		t.Errorf("skip message = %q, want a SKIPPED line pointing at `make kafka-libs`", r.skipped)
	}
	if r.failed != "" {
		t.Errorf("failed: %s", r.failed)
	}
}

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9_]{1,63}$`) // PostgreSQL name and Kafka topic
	a, b := testenv.UniqueName(t), testenv.UniqueName(t)
	if a == b {
		t.Errorf("two calls both returned %q", a)
	}
	for _, n := range []string{a, b} {
		if !valid.MatchString(n) {
			t.Errorf("%q is not a valid topic/database name", n)
		}
	}
}

// kfake must serve sarama's consumer groups (JoinGroup, SyncGroup,
// Heartbeat, OffsetCommit, OffsetFetch) for the versions we use.
func TestFakeKafkaSaramaConsumerGroup(t *testing.T) {
	for _, v := range []sarama.KafkaVersion{sarama.V2_1_0_0, sarama.V4_1_0_0} {
		t.Run(v.String(), func(t *testing.T) {
			brokers := testenv.FakeKafka(t, 3, "flows")
			exchange(t, brokers, v, "flows", "inserter", "first", 200)
			// The group's committed offsets must hold: a new session sees
			// only the new messages.
			exchange(t, brokers, v, "flows", "inserter", "second", 100)
		})
	}
}

func TestRealKafka(t *testing.T) {
	k := testenv.StartKafka(t)
	t.Logf("broker: %s, sarama version %s", k.Name(), k.SaramaVersion())
	if !k.SaramaVersion().IsAtLeast(sarama.V2_1_0_0) {
		t.Fatalf("sarama version %s is below Kafka 4's V2_1_0_0 baseline", k.SaramaVersion())
	}
	k.CreateTopic(t, "flows", 3)
	exchange(t, k.Brokers(), k.SaramaVersion(), "flows", "inserter", "before-restart", 300)

	for _, restart := range []struct {
		name string
		down func() error
	}{{"stop", k.Stop}, {"kill", k.Kill}} {
		start := time.Now()
		if err := restart.down(); err != nil {
			t.Fatalf("%s: %v", restart.name, err)
		}
		stopped := time.Now()
		if err := k.Start(); err != nil {
			t.Fatalf("start after %s: %v", restart.name, err)
		}
		t.Logf("%s took %s, restart %s", restart.name, stopped.Sub(start).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		// Same address, same data, same committed offsets.
		exchange(t, k.Brokers(), k.SaramaVersion(), "flows", "inserter", "after-"+restart.name, 300)
	}
}

func TestSharedKafka(t *testing.T) {
	k := testenv.SharedKafka(t)
	if again := testenv.SharedKafka(t); again != k {
		t.Fatalf("SharedKafka started a second broker")
	}
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 2)
	exchange(t, k.Brokers(), k.SaramaVersion(), topic, topic, "shared", 50)
}

// exchange produces n messages tagged tag round-robin over topic's
// partitions, then consumes with consumer group `group` until it has n
// messages, and checks it got exactly the ones just produced: a group that
// resumed from the wrong offset would see older tags.
func exchange(t *testing.T, brokers []string, v sarama.KafkaVersion, topic, group, tag string, n int) {
	t.Helper()
	cfg := kafka.NewConfig("", v,
		kafka.Producer(kafka.ProducerSettings{RoundRobin: true}),
		kafka.Consumer(sarama.OffsetOldest))

	producer, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatalf("sarama producer: %v", err)
	}
	sent := map[string]bool{}
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		val := fmt.Sprintf("%s-%d", tag, i)
		sent[val] = true
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(val)}
	}
	if err := producer.SendMessages(msgs); err != nil {
		if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
			err = fmt.Errorf("%w; first: partition %d: %w", err, errs[0].Msg.Partition, errs[0].Err)
		}
		t.Fatalf("produce %d messages: %v", n, err)
	}
	producer.Close()

	cg, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		t.Fatalf("sarama consumer group: %v", err)
	}
	defer cg.Close()
	go func() { // kafka.Consumer returns errors on this channel: drain it
		for err := range cg.Errors() {
			t.Logf("consumer group error (sarama retries): %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := &collector{want: n, got: map[string]bool{}, partitions: map[int32]int{}, done: cancel}
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{topic}, h); err != nil {
			t.Fatalf("consume: %v", err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != n || h.total != n {
		t.Fatalf("consumed %d messages (%d distinct), want the %d just produced", h.total, len(h.got), n)
	}
	for val := range h.got {
		if !sent[val] {
			t.Fatalf("consumed %q, which this round did not produce: committed offsets were lost", val)
		}
	}
	if len(h.partitions) < 2 {
		t.Errorf("messages came from partitions %v, want them spread", h.partitions)
	}
	if h.commits == 0 {
		t.Errorf("no offset commit happened")
	}
}

// collector is a sarama.ConsumerGroupHandler that gathers message values
// and stops the consumer once it has want of them.
type collector struct {
	mu         sync.Mutex
	want       int
	total      int
	got        map[string]bool
	partitions map[int32]int
	commits    int
	done       context.CancelFunc
}

func (c *collector) Setup(sarama.ConsumerGroupSession) error { return nil }

// Cleanup commits synchronously, so OffsetCommit is exercised for sure.
func (c *collector) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	c.mu.Lock()
	c.commits++
	c.mu.Unlock()
	return nil
}

func (c *collector) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		c.mu.Lock()
		c.total++
		c.got[string(msg.Value)] = true
		c.partitions[msg.Partition]++
		if c.total >= c.want {
			c.done()
		}
		c.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func TestPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	query := func(dsn, sql string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		defer conn.Close(ctx)
		var out string
		if err := conn.QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	if got := query(pg.DSN(), "select 1::text"); got != "1" {
		t.Fatalf("select 1 = %q", got)
	}
	exec := func(sql string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pg.DSN())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("create table kept (v text)")

	for _, restart := range []struct {
		name string
		down func() error
	}{{"stop", pg.Stop}, {"kill", pg.Kill}} {
		// Committed just before the crash: only WAL replay can bring it back.
		exec("insert into kept values ('" + restart.name + "')")
		start := time.Now()
		if err := restart.down(); err != nil {
			t.Fatalf("%s: %v", restart.name, err)
		}
		stopped := time.Now()
		if err := pg.Start(); err != nil {
			t.Fatalf("start after %s: %v", restart.name, err)
		}
		t.Logf("%s took %s, restart %s", restart.name, stopped.Sub(start).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
		if got := query(pg.DSN(), "select count(*)::text from kept where v = '"+restart.name+"'"); got != "1" {
			t.Fatalf("after %s: %s rows committed before it, want 1", restart.name, got)
		}
	}

	dsn := pg.CreateDB(t, "fresh")
	if got := query(dsn, "select current_database()"); got != "fresh" {
		t.Errorf("CreateDB DSN connects to %q", got)
	}
	if got := query(dsn, "select count(*)::text from pg_tables where tablename = 'kept'"); got != "0" {
		t.Errorf("fresh database sees the postgres database's table")
	}
}

func TestSharedPostgres(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	if again := testenv.SharedPostgres(t); again != pg {
		t.Fatalf("SharedPostgres started a second server")
	}
	name := testenv.UniqueName(t)
	dsn := pg.CreateDB(t, name)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to CreateDB's DSN: %v", err)
	}
	defer conn.Close(ctx)
	var db string
	if err := conn.QueryRow(ctx, "select current_database()").Scan(&db); err != nil || db != name {
		t.Fatalf("current_database() = %q, %v; want %q", db, err, name)
	}
}

// TestKafkaCluster: a 3-node cluster serves a replicated topic and a
// consumer group before, during and after the SIGKILL of the node that
// leads the most partitions, and the restarted node catches up.
func TestKafkaCluster(t *testing.T) {
	c := testenv.StartKafkaCluster(t, 3)
	if got := len(c.Brokers()); got != 3 {
		t.Fatalf("Brokers() = %d addresses, want 3", got)
	}
	minISR := "2"
	c.CreateTopic(t, "flows", 6, 3, map[string]*string{"min.insync.replicas": &minISR})
	v := c.SaramaVersion()
	exchange(t, c.Brokers(), v, "flows", "inserter", "before-kill", 300)

	perNode := map[int32]int{}
	for _, leader := range c.Leaders(t, "flows") {
		perNode[leader]++
	}
	if len(perNode) < 2 {
		t.Errorf("leaders by node %v: want the 6 partitions spread over the nodes", perNode)
	}
	victim := int32(1)
	for id, n := range perNode {
		if n > perNode[victim] {
			victim = id
		}
	}
	node := c.NodeByID(victim)
	begin := time.Now()
	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	c.WaitFenced(t, victim, 30*time.Second)
	t.Logf("node %d (leader of %d partitions) killed, fenced after %s", victim, perNode[victim], time.Since(begin).Round(time.Millisecond))
	for p, leader := range c.Leaders(t, "flows") {
		if leader == victim {
			t.Errorf("partition %d still led by the killed node %d", p, victim)
		}
	}
	// acks=all with 2 of 3 replicas in sync, and the group's offsets kept.
	exchange(t, c.Brokers(), v, "flows", "inserter", "node-down", 300)

	begin = time.Now()
	if err := node.Start(); err != nil {
		t.Fatalf("restart node %d: %v", victim, err)
	}
	c.WaitInSync(t, time.Minute)
	t.Logf("node %d restarted and in sync on every partition after %s", victim, time.Since(begin).Round(time.Millisecond))
	exchange(t, c.Brokers(), v, "flows", "inserter", "after-restart", 300)
}
