package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/inserter"
	flowkafka "github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// The cluster tests run the real components in-process (the mocker, the
// enricher, the inserter: the libraries their binaries wrap) against a
// 3-node Kafka 4 cluster, SIGKILL one node mid-stream, restart it, and
// check that PostgreSQL holds exactly the flows the mocker's producer had
// acknowledged: acks=all with idempotence, topics at replication 3 and
// min.insync.replicas 2, so an acknowledged record is on two nodes at least.
const (
	clusterPartitions = 6
	clusterMinISR     = "2"
)

// TestClusterNodeKillInserter: mocker → flows → inserter → PostgreSQL while
// the node leading the most partitions of flows is SIGKILLed and restarted.
func TestClusterNodeKillInserter(t *testing.T) {
	const n, seed = 100_000, 14
	c := testenv.StartKafkaCluster(t, 3)
	createClusterTopics(t, c, "flows")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	ins := startInserter(t, c, "flows", dsn)
	m := startMocker(t, c, "flows", seed, n, 2000)

	waitProduced(t, m, n/5)
	victim := mostLeader(t, c, "flows", ins.group)
	killAndRestart(t, c, victim, m, n)
	m.wait(t)

	// Every record of flows is covered by the offsets stored with the rows:
	// nothing more can arrive, so the counts below are final.
	ends := endOffsets(t, c, "flows")
	if ends != n {
		t.Errorf("flows holds %d records, want the %d the mocker had acknowledged (one flow each): the idempotent producer wrote duplicates or lost some", ends, n)
	}
	waitStoredOffsets(t, dsn, ends, 3*time.Minute)
	checkExactlyOnce(t, dsn, seed, n, false)
	ins.stop(t)
	t.Logf("inserter: %v records re-read after the kill and skipped as already stored", ins.metric(t, "flowpipeline_inserter_records_already_stored_total"))
}

// TestClusterNodeKillEnricher: mocker → flows → enricher (transactions) →
// flows-enriched → inserter (read_committed) → PostgreSQL while the
// enricher's transaction coordinator is SIGKILLed and restarted.
func TestClusterNodeKillEnricher(t *testing.T) {
	const n, seed = 100_000, 15
	c := testenv.StartKafkaCluster(t, 3)
	createClusterTopics(t, c, "flows", "flows-enriched")
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	ins := startInserter(t, c, "flows-enriched", dsn)
	enr := startEnricher(t, c, "flows", "flows-enriched")
	m := startMocker(t, c, "flows", seed, n, 2000)
	begin := time.Now()

	// A fifth of the stream is acknowledged and flows reach PostgreSQL:
	// the enricher commits transactions.
	waitProduced(t, m, n/5)
	flowtest.WaitRows(t, dsn, 1, 2*time.Minute)
	victim := c.TransactionCoordinator(t, enr.cfg.TransactionalID)
	t.Logf("node %d is the transaction coordinator of %q; group coordinators: enricher %d, inserter %d; partition leaders of flows %v, of flows-enriched %v",
		victim, enr.cfg.TransactionalID, c.GroupCoordinator(t, enr.cfg.Group), c.GroupCoordinator(t, ins.group),
		c.Leaders(t, "flows"), c.Leaders(t, "flows-enriched"))
	killAndRestart(t, c, victim, m, n)
	m.wait(t)

	// Once the enricher's committed input offsets reach the end of flows,
	// its output is final.
	waitGroupOffsets(t, c, enr.cfg.Group, "flows", n, 3*time.Minute)
	streamed := time.Since(begin)
	flowtest.WaitRows(t, dsn, n, 3*time.Minute)
	waitNoMoreRows(t, dsn, n)
	checkExactlyOnce(t, dsn, seed, n, true)
	ins.stop(t)
	enr.stop(t)
	committed := enr.metric(t, "flowpipeline_enricher_transactions_total", "result", "committed")
	t.Logf("enricher: %v transactions committed in %s, %v aborted; restarted %d times after Run gave up: %v",
		committed, streamed.Round(time.Millisecond), enr.metric(t, "flowpipeline_enricher_transactions_total", "result", "aborted"),
		len(enr.failures()), enr.failures())
	// Transactions end every 200 ms while flows arrive; one per 2 s leaves
	// room for a loaded machine and the failover. When each commit waited
	// for franz-go's 5 s metadata refresh, it was one every 4 to 5 s.
	if want := streamed.Seconds() / 2; committed < want {
		t.Errorf("%v transactions committed in %s, want at least %.0f (one per 2 s) at -kafka.transaction.interval %s",
			committed, streamed.Round(time.Millisecond), want, enr.cfg.TransactionInterval)
	}
}

func createClusterTopics(t *testing.T, c *testenv.KafkaCluster, topics ...string) {
	t.Helper()
	minISR := clusterMinISR
	for _, topic := range topics {
		c.CreateTopic(t, topic, clusterPartitions, 3, map[string]*string{"min.insync.replicas": &minISR})
	}
}

// mostLeader returns the node that leads the most partitions of topic,
// preferring the group's coordinator among equals: killing it moves the
// most leaders and the group at once.
func mostLeader(t *testing.T, c *testenv.KafkaCluster, topic, group string) int32 {
	t.Helper()
	perNode := map[int32]int{}
	for _, leader := range c.Leaders(t, topic) {
		perNode[leader]++
	}
	coord := c.GroupCoordinator(t, group)
	victim := coord
	for id, k := range perNode {
		if k > perNode[victim] || (k == perNode[victim] && victim != coord && id < victim) {
			victim = id
		}
	}
	t.Logf("partition leaders of %s by node: %v; coordinator of group %q: node %d", topic, perNode, group, coord)
	return victim
}

// killAndRestart SIGKILLs node id while the mocker is mid-stream, waits
// until the controller has fenced it and moved its leaders, restarts it on
// the same data directory and waits until it is back in sync on every
// partition.
func killAndRestart(t *testing.T, c *testenv.KafkaCluster, id int32, m *runningMocker, n uint64) {
	t.Helper()
	node := c.NodeByID(id)
	atKill := m.Produced()
	begin := time.Now()
	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	if atKill >= n {
		t.Fatalf("node %d killed after the mocker had all %d flows acknowledged: not mid-stream", id, n)
	}
	c.WaitFenced(t, id, time.Minute)
	fenced := time.Since(begin)
	if err := node.Start(); err != nil {
		t.Fatalf("restart node %d: %v", id, err)
	}
	restarted := time.Since(begin)
	atRestart := m.Produced()
	c.WaitInSync(t, 2*time.Minute)
	t.Logf("SIGKILL node %d at %d of %d flows acknowledged; fenced after %s, restarted after %s (at %d flows acknowledged%s), every replica in sync after %s",
		id, atKill, n, fenced.Round(time.Millisecond), restarted.Round(time.Millisecond), atRestart,
		map[bool]string{true: ", mid-stream", false: ", after the stream ended"}[atRestart < n], time.Since(begin).Round(time.Millisecond))
}

// runningMocker is a mocker.Mocker running in the background.
type runningMocker struct {
	*mocker.Mocker
	reg  *prometheus.Registry
	n    uint64
	done chan error
}

// startMocker runs the mocker with n flows at rate flows/s to topic, one
// flow per record, with the realistic address plan of the demo.
func startMocker(t *testing.T, c *testenv.KafkaCluster, topic string, seed int64, n uint64, rate float64) *runningMocker {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := mocker.New(mocker.Config{Brokers: c.Brokers(), Topic: topic, KafkaVersion: c.SaramaVersion().String(),
		Count: n, Rate: rate, Seed: seed, ProgressInterval: -1, ShutdownTimeout: time.Minute},
		bufferedLogger(t, "mocker"), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	rm := &runningMocker{Mocker: m, reg: reg, n: n, done: make(chan error, 1)}
	go func() { rm.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-rm.done
	})
	return rm
}

// wait waits for Run to end with every flow acknowledged.
func (m *runningMocker) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-m.done:
		m.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("mocker: %v", err)
		}
	case <-time.After(4 * time.Minute):
		t.Fatalf("mocker still running after 4 min: %d of %d flows acknowledged", m.Produced(), m.n)
	}
	if m.Produced() != m.n {
		t.Fatalf("mocker ended with %d flows acknowledged, want %d", m.Produced(), m.n)
	}
	// Sarama retries within the idempotent session itself; a delivery it
	// gives up on is re-sent by the mocker as a new record.
	t.Logf("mocker: %d flows acknowledged; %v failed deliveries re-sent", m.n, flowtest.Metric(t, m.reg, "flowpipeline_mocker_flows_resent_total"))
}

// waitProduced waits until the mocker has had n flows acknowledged.
func waitProduced(t *testing.T, m *runningMocker, n uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for m.Produced() < n {
		if time.Now().After(deadline) {
			t.Fatalf("mocker: %d flows acknowledged after 2 min, want %d", m.Produced(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// component is an inserter or an enricher running in the background.
type component struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (c *component) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			t.Errorf("stopped with an error: %v", err)
		}
	case <-time.After(time.Minute):
		t.Errorf("still running a minute after its context ended")
	}
}

func (c *component) metric(t *testing.T, name string) float64 {
	t.Helper()
	return flowtest.Metric(t, c.reg, name)
}

type runningInserter struct {
	component
	group string
}

func startInserter(t *testing.T, c *testenv.KafkaCluster, topic, dsn string) *runningInserter {
	t.Helper()
	ri := &runningInserter{component: component{reg: prometheus.NewRegistry(), done: make(chan error, 1)}, group: "inserter"}
	in, err := inserter.New(inserter.Config{Brokers: c.Brokers(), Topic: topic, Group: ri.group, PostgresDSN: dsn,
		KafkaVersion: c.SaramaVersion().String(), FlushCount: 5000, FlushInterval: 200 * time.Millisecond},
		bufferedLogger(t, "inserter"), ri.reg)
	if err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	ctx, ri.cancel = context.WithCancel(context.Background())
	go func() { ri.done <- in.Run(ctx) }()
	t.Cleanup(func() {
		ri.cancel()
		err := <-ri.done
		ri.done <- err
	})
	return ri
}

// runningEnricher is the enricher pipeline under a supervisor that starts
// it again when Run returns an error, as the container's restart policy
// does: Run gives up when the transaction state is lost.
type runningEnricher struct {
	component
	cfg  enricher.Config
	mu   sync.Mutex
	regs []*prometheus.Registry // one per run
	errs []error                // what made Run give up, one per restart
}

func (re *runningEnricher) failures() []error {
	re.mu.Lock()
	defer re.mu.Unlock()
	return slices.Clone(re.errs)
}

func startEnricher(t *testing.T, c *testenv.KafkaCluster, in, out string) *runningEnricher {
	t.Helper()
	cfg := enricher.DefaultConfig()
	cfg.Brokers, cfg.Topic, cfg.OutTopic = c.Brokers(), in, out
	cfg.TransactionalID = "enricher-cluster-test"
	cfg.TransactionInterval = 200 * time.Millisecond
	cfg.TransactionTimeout = 10 * time.Second
	cfg.SessionTimeout = 6 * time.Second
	logger := bufferedLogger(t, "enricher")
	// The demo's networks and exporters, which the mocker's address plan
	// is built from: every flow gets its exporter's name.
	loader, err := sources.NewLoader(sources.Config{
		NetworksFile:  filepath.Join("..", "..", "..", "config", "demo-networks.yml"),
		ExportersFile: filepath.Join("..", "..", "..", "config", "demo-exporters.yml"),
	}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := enricher.NewTransform(loader, enricher.Options{})
	re := &runningEnricher{component: component{done: make(chan error, 1)}, cfg: cfg}
	var ctx context.Context
	ctx, re.cancel = context.WithCancel(context.Background())
	run := func() error {
		reg := prometheus.NewRegistry()
		p, err := enricher.NewPipeline(cfg, tr, logger, reg)
		if err != nil {
			return err
		}
		re.mu.Lock()
		re.regs = append(re.regs, reg)
		re.mu.Unlock()
		return p.Run(ctx)
	}
	go func() {
		for {
			err := run()
			if err == nil || ctx.Err() != nil {
				re.done <- err
				return
			}
			re.mu.Lock()
			re.errs = append(re.errs, err)
			re.mu.Unlock()
			logger.Warn("enricher failed; restarting it", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() {
		re.cancel()
		err := <-re.done
		re.done <- err
	})
	return re
}

// metric sums a counter over the enricher's runs.
func (re *runningEnricher) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	re.mu.Lock()
	defer re.mu.Unlock()
	var sum float64
	for _, reg := range re.regs {
		sum += flowtest.Metric(t, reg, name, labels...)
	}
	return sum
}

// bufferedLogger logs to a buffer whose tail the test prints if it fails.
func bufferedLogger(t *testing.T, name string) *slog.Logger {
	w := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(strings.TrimRight(w.String(), "\n"), "\n")
			t.Logf("%s log (last 30 lines):\n%s", name, strings.Join(lines[max(len(lines)-30, 0):], "\n"))
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func saramaClient(t *testing.T, c *testenv.KafkaCluster) sarama.Client {
	t.Helper()
	cl, err := sarama.NewClient(c.Brokers(), flowkafka.NewConfig("cluster-test", c.SaramaVersion()))
	if err != nil {
		t.Fatalf("connect to %s: %v", c.Name(), err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// endOffsets is the sum of topic's end offsets: every record it ever had
// (no transaction markers on a topic written without transactions).
func endOffsets(t *testing.T, c *testenv.KafkaCluster, topic string) uint64 {
	t.Helper()
	ends, err := flowkafka.EndOffsets(saramaClient(t, c), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, e := range ends {
		sum += uint64(e)
	}
	return sum
}

// waitStoredOffsets waits until the offsets the inserter stored with its
// rows cover want records.
func waitStoredOffsets(t *testing.T, dsn string, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := flowtest.Query(ctx, dsn)
		cancel()
		if err == nil && uint64(d.StoredOffsets) >= want {
			if uint64(d.StoredOffsets) > want {
				t.Fatalf("kafka_offsets covers %d records, but the topic holds %d", d.StoredOffsets, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the inserter's stored offsets cover %d of %d records (%d rows; last error: %v)", timeout, d.StoredOffsets, want, d.Rows, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitGroupOffsets waits until group's committed offsets on topic add up
// to want records.
func waitGroupOffsets(t *testing.T, c *testenv.KafkaCluster, group, topic string, want uint64, timeout time.Duration) {
	t.Helper()
	parts := make([]int32, clusterPartitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	deadline := time.Now().Add(timeout)
	for {
		sum, err := groupOffsets(c, group, topic, parts)
		if err == nil && sum == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s group %q has committed %d of %d records of %s (last error: %v)", timeout, group, sum, want, topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func groupOffsets(c *testenv.KafkaCluster, group, topic string, parts []int32) (uint64, error) {
	admin, err := sarama.NewClusterAdmin(c.Brokers(), flowkafka.NewConfig("cluster-test", c.SaramaVersion()))
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, b := range resp.Blocks[topic] {
		if b.Err != sarama.ErrNoError {
			return 0, b.Err
		}
		sum += uint64(max(b.Offset, 0))
	}
	return sum, nil
}

// waitNoMoreRows checks that the flows table stays at n rows for 2 s. The
// enriched topic's transaction markers leave no offset to wait for, so a
// duplicate could only show up as a row after the count was reached.
func waitNoMoreRows(t *testing.T, dsn string, n int64) {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := flowtest.Query(ctx, dsn)
		cancel()
		if err == nil && d.Rows != n {
			t.Fatalf("the flows table went from %d to %d rows", n, d.Rows)
		}
	}
}

// flowID identifies a mocker flow: each exporter numbers its flows.
type flowID struct {
	sampler netip.Addr
	seq     int64
}

// checkExactlyOnce fails unless PostgreSQL holds exactly the first n flows
// of the mocker's generator with seed, each once: the same flows (sampler
// address, sequence number), rows, bytes and packets. With enriched, each
// must also carry its exporter's name from the demo exporters file: it
// went through the enricher's transform.
func checkExactlyOnce(t *testing.T, dsn string, seed int64, n int64, enriched bool) {
	t.Helper()
	plan, err := mocker.DemoPlan()
	if err != nil {
		t.Fatal(err)
	}
	g := mocker.NewPlanGenerator(seed, plan)
	want := map[flowID]bool{}
	var tot flowtest.Totals
	var m pb.FlowMessage
	for range n {
		g.Next(&m, time.Now())
		addr, _ := netip.AddrFromSlice(m.SamplerAddress)
		want[flowID{addr.Unmap(), int64(m.SequenceNum)}] = true
		tot.Flows++
		tot.Bytes += int64(m.Bytes)
		tot.Packets += int64(m.Packets)
	}
	d := flowtest.Check(t, dsn, tot)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT sampler_address, sequence_num FROM flows")
	if err != nil {
		t.Fatal(err)
	}
	var extra []flowID
	seen := 0
	for rows.Next() {
		var id flowID
		if err := rows.Scan(&id.sampler, &id.seq); err != nil {
			t.Fatal(err)
		}
		id.sampler = id.sampler.Unmap()
		if !want[id] {
			extra = append(extra, id)
			continue
		}
		seen++
		delete(want, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != 0 || len(extra) != 0 {
		var missing []string
		for id := range want {
			missing = append(missing, fmt.Sprint(id))
			if len(missing) == 5 {
				break
			}
		}
		slices.Sort(missing)
		t.Errorf("%d of the %d acknowledged flows are missing (e.g. %v), %d stored flows were not acknowledged or are repeats (e.g. %v)",
			len(want), n, missing, len(extra), extra[:min(len(extra), 5)])
	}
	if enriched {
		var named int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM flows WHERE exporter_name <> ''").Scan(&named); err != nil {
			t.Fatal(err)
		}
		if named != n {
			t.Errorf("%d of %d stored flows carry an exporter name: not every flow went through the enricher", named, n)
		}
	}
	t.Logf("PostgreSQL holds exactly the %d acknowledged flows, each once (%d distinct identities): %v; kafka_offsets covers %d records",
		n, seen, tot, d.StoredOffsets)
}
