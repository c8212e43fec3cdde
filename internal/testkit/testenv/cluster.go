package testenv

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/proc"
)

// clusterStartTimeout bounds the first start of all the nodes of a cluster
// (several JVMs at once, then a controller election) and the restart of a
// node (catching up on the metadata log before it registers again). A
// shared 2-core machine under load took 77 s for the first.
const clusterStartTimeout = 3 * time.Minute

// KafkaCluster is a private Apache Kafka cluster of several nodes (KRaft,
// every node both broker and controller, a static quorum) running in JVMs
// from the jars of `make kafka-libs`, each on 127.0.0.1 with its own ports
// and data directory. The internal topics (consumer offsets, transaction
// state) have replication min(nodes, 3) and min.insync.replicas one less,
// so a 3-node cluster keeps committing offsets and transactions with a
// node down; new topics get the same defaults.
type KafkaCluster struct {
	nodes []*Kafka
}

// StartKafkaCluster starts a private cluster of nodes nodes for this test,
// killed and removed when the test ends. When the test fails, the tail of
// each node's log is logged.
func StartKafkaCluster(t testing.TB, nodes int) *KafkaCluster {
	t.Helper()
	if nodes < 1 {
		t.Fatalf("testenv.StartKafkaCluster: %d nodes, want at least 1", nodes)
	}
	c := start(t, fmt.Sprintf("real Kafka cluster of %d nodes", nodes), func() (*KafkaCluster, error) { return startKafkaCluster(nodes) })
	if c != nil {
		t.Cleanup(func() { // runs before close removes the logs
			if t.Failed() {
				for _, k := range c.nodes {
					t.Logf("Kafka node %d:\n%s", k.node.id, k.p.LogTail(25))
				}
			}
		})
	}
	return c
}

func startKafkaCluster(n int) (c *KafkaCluster, err error) {
	base, err := kafkaJars()
	if err != nil {
		return nil, err
	}
	c = &KafkaCluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var voters []string
	for i := range n {
		k := &Kafka{version: base.version, java: base.java, libs: base.libs}
		c.nodes = append(c.nodes, k)
		if k.port, err = proc.FreePort(); err != nil {
			return nil, err
		}
		k.node.controllerPort, err = proc.FreePort()
		if err != nil {
			return nil, err
		}
		if k.dir, err = serviceDir("kafka"); err != nil {
			return nil, err
		}
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i+1, k.node.controllerPort))
	}
	replication := min(n, 3)
	for i, k := range c.nodes {
		k.node = kafkaNode{
			id:             int32(i + 1),
			controllerPort: k.node.controllerPort,
			// A static quorum: every node knows every voter from its
			// configuration, so each formats alone, without
			// --standalone or --initial-controllers.
			quorum:       "controller.quorum.voters=" + strings.Join(voters, ","),
			replication:  replication,
			minISR:       max(replication-1, 1),
			brokers:      n,
			heap:         []string{"-Xmx256m", "-Xms64m"},
			startTimeout: clusterStartTimeout,
		}
	}
	id := clusterID()
	if err := c.each(func(k *Kafka) error { return k.setup(id) }); err != nil {
		return nil, err
	}
	for _, k := range c.nodes {
		k.mu.Lock()
		err := k.launch()
		k.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	// No node is ready before a quorum elected a controller and every node
	// registered: wait for them all at once.
	err = c.each(func(k *Kafka) error {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.awaitReady(k.node.startTimeout)
	})
	return c, err
}

// each runs f on every node concurrently and joins the errors.
func (c *KafkaCluster) each(f func(*Kafka) error) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, k := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(k)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Brokers returns the bootstrap addresses of all the nodes; they do not
// change across restarts.
func (c *KafkaCluster) Brokers() []string {
	var addrs []string
	for _, k := range c.nodes {
		addrs = append(addrs, k.Brokers()...)
	}
	return addrs
}

// Node returns the i-th node (0-based; its node.id is i+1, see NodeID), to
// Kill, Stop and Start it.
func (c *KafkaCluster) Node(i int) *Kafka { return c.nodes[i] }

// NodeByID returns the node whose node.id is id, as metadata names it.
func (c *KafkaCluster) NodeByID(id int32) *Kafka {
	for _, k := range c.nodes {
		if k.node.id == id {
			return k
		}
	}
	panic(fmt.Sprintf("testenv: no Kafka node with id %d", id))
}

// NodeID is the node's node.id, as metadata and coordinators name it.
func (k *Kafka) NodeID() int32 { return k.node.id }

// SaramaVersion is the brokers' version for sarama's Config.Version.
func (c *KafkaCluster) SaramaVersion() sarama.KafkaVersion { return c.nodes[0].SaramaVersion() }

// Name describes the cluster for logs.
func (c *KafkaCluster) Name() string {
	return fmt.Sprintf("Apache Kafka %s cluster of %d nodes (real brokers)", c.nodes[0].version, len(c.nodes))
}

func (c *KafkaCluster) describe() string {
	return c.Name() + " on " + strings.Join(c.Brokers(), ",")
}

// close kills every node (a clean stop of the last nodes would wait for a
// controller quorum that is gone) and removes their directories.
func (c *KafkaCluster) close() {
	c.each(func(k *Kafka) error {
		k.mu.Lock()
		if k.p.Running() {
			k.p.Kill()
		}
		k.mu.Unlock()
		os.RemoveAll(k.dir)
		return nil
	})
}

// CreateTopic creates a topic with the given replication factor and topic
// configs (such as min.insync.replicas) and waits until every partition
// has a leader that serves it and all its replicas in sync.
func (c *KafkaCluster) CreateTopic(t testing.TB, name string, partitions int32, replication int16, configs map[string]*string) {
	t.Helper()
	createTopic(t, c.Name(), c.Brokers(), c.SaramaVersion(), name,
		&sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: replication, ConfigEntries: configs})
}

// state reads the metadata of topics (none: all) from the first node that
// answers with every partition led and served.
func (c *KafkaCluster) state(topics ...string) (*kafkaState, error) {
	var st *kafkaState
	err := anyBroker(c.Brokers(), func(addr string) error {
		var err error
		st, err = kafkaReady(addr, c.SaramaVersion(), 0, topics...)
		return err
	})
	return st, err
}

// Leaders returns the leader's node.id of each partition of topic.
func (c *KafkaCluster) Leaders(t testing.TB, topic string) map[int32]int32 {
	t.Helper()
	var st *kafkaState
	err := poll(30*time.Second, func() (err error) { st, err = c.state(topic); return err })
	if err != nil {
		t.Fatalf("read the leaders of topic %s: %v", topic, err)
	}
	leaders := map[int32]int32{}
	for _, p := range st.partitions[topic] {
		leaders[p.ID] = p.Leader
	}
	return leaders
}

// GroupCoordinator returns the node.id of the consumer group's coordinator.
func (c *KafkaCluster) GroupCoordinator(t testing.TB, group string) int32 {
	t.Helper()
	return c.coordinator(t, "consumer group", group, func(cl sarama.Client) (*sarama.Broker, error) { return cl.Coordinator(group) })
}

// TransactionCoordinator returns the node.id of the transactional id's
// coordinator.
func (c *KafkaCluster) TransactionCoordinator(t testing.TB, transactionalID string) int32 {
	t.Helper()
	return c.coordinator(t, "transactional id", transactionalID, func(cl sarama.Client) (*sarama.Broker, error) {
		return cl.TransactionCoordinator(transactionalID)
	})
}

func (c *KafkaCluster) coordinator(t testing.TB, kind, key string, find func(sarama.Client) (*sarama.Broker, error)) int32 {
	t.Helper()
	cl, err := sarama.NewClient(c.Brokers(), kafka.NewConfig("flowpipeline-testenv", c.SaramaVersion()))
	if err != nil {
		t.Fatalf("find the coordinator of %s %q: connect to %s: %v", kind, key, c.Name(), err)
	}
	defer cl.Close()
	b, err := find(cl)
	if err != nil {
		t.Fatalf("find the coordinator of %s %q: %v", kind, key, err)
	}
	return b.ID()
}

// WaitFenced waits until the controller has fenced node id (killed, its
// session expired): no live node lists it, and every partition has a
// leader other than it that serves it.
func (c *KafkaCluster) WaitFenced(t testing.TB, id int32, timeout time.Duration) {
	t.Helper()
	err := poll(timeout, func() error {
		st, err := c.state()
		if err != nil {
			return err
		}
		if _, ok := st.brokers[id]; ok {
			return fmt.Errorf("node %d is still registered", id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node %d not fenced after %s (broker.session.timeout.ms is 4 s): %v", id, timeout, err)
	}
}

// WaitInSync waits until every partition of topics (none: all, the
// internal ones included) has all its replicas in sync, as after a
// restarted node has caught up.
func (c *KafkaCluster) WaitInSync(t testing.TB, timeout time.Duration, topics ...string) {
	t.Helper()
	err := poll(timeout, func() error {
		st, err := c.state(topics...)
		if err != nil {
			return err
		}
		all := topics
		if len(all) == 0 {
			for topic := range st.partitions {
				all = append(all, topic)
			}
			slices.Sort(all)
		}
		return st.inSync(all...)
	})
	if err != nil {
		t.Fatalf("replicas not in sync after %s: %v", timeout, err)
	}
}
