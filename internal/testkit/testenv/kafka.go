package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/proc"
)

const (
	kafkaStartTimeout = 60 * time.Second
	kafkaStopTimeout  = 60 * time.Second
)

// FakeKafka starts an in-process fake Kafka cluster (kfake, 3 brokers on
// 127.0.0.1) with topics seeded at the given partition count, closed when the
// test ends, and returns its broker addresses. It speaks the real protocol,
// consumer groups included, and starts in milliseconds. Unknown topics are
// auto-created with the same partition count, like the real test broker.
func FakeKafka(t testing.TB, partitions int32, topics ...string) []string {
	t.Helper()
	opts := []kfake.Opt{kfake.AllowAutoTopicCreation()}
	if partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(int(partitions)))
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("start in-process fake Kafka (kfake): %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// Kafka is a private single-node Apache Kafka broker (KRaft, combined
// broker+controller) running in a JVM from the jars of `make kafka-libs`.
type Kafka struct {
	version string // broker version, from the kafka_2.13-<version>.jar name
	java    string
	libs    string
	dir     string // server.properties, log4j2.properties, data/, broker.log
	port    int    // PLAINTEXT listener; kept across restarts
	node    kafkaNode

	mu sync.Mutex
	p  *proc.Proc
}

// kafkaNode is what differs between a single broker and a node of a
// KafkaCluster.
type kafkaNode struct {
	id             int32    // node.id
	controllerPort int      // CONTROLLER listener; kept across restarts
	quorum         string   // the controller.quorum.* line of server.properties
	replication    int      // of the internal topics, and the default for new ones
	minISR         int      // min.insync.replicas of the internal topics and default
	brokers        int      // how many brokers metadata must list before the node is ready
	heap           []string // -Xmx, -Xms
	startTimeout   time.Duration
}

// singleNode is a standalone broker: it is its own controller quorum.
func singleNode(controllerPort int) kafkaNode {
	return kafkaNode{id: 1, controllerPort: controllerPort,
		quorum:      fmt.Sprintf("controller.quorum.bootstrap.servers=127.0.0.1:%d", controllerPort),
		replication: 1, minISR: 1, brokers: 1, heap: []string{"-Xmx512m", "-Xms128m"}, startTimeout: kafkaStartTimeout}
}

var sharedKafka = &shared[*Kafka]{what: "real Kafka", start: startKafka}

// StartKafka starts a private broker for this test, stopped and removed when
// the test ends. Use it when the test stops or kills the broker; otherwise
// prefer SharedKafka.
func StartKafka(t testing.TB) *Kafka {
	t.Helper()
	return start(t, "real Kafka", startKafka)
}

// SharedKafka returns this test binary's broker, starting it on first use;
// testenv.Main stops it. Tests must not stop it and should use their own
// topics (UniqueName).
func SharedKafka(t testing.TB) *Kafka {
	t.Helper()
	return sharedKafka.get(t, "SharedKafka")
}

// Name describes the broker for logs and test names.
func (k *Kafka) Name() string { return "Apache Kafka " + k.version + " (real broker)" }

// Version is the broker's version, e.g. "4.1.1".
func (k *Kafka) Version() string { return k.version }

// SaramaVersion is the broker's version for sarama's Config.Version, capped
// at the newest version this sarama knows. Kafka 4 rejects the requests
// sarama sends below V2_1_0_0.
func (k *Kafka) SaramaVersion() sarama.KafkaVersion {
	v, err := sarama.ParseKafkaVersion(k.version)
	if err != nil || !sarama.MaxVersion.IsAtLeast(v) {
		return sarama.MaxVersion
	}
	return v
}

// Brokers returns the bootstrap address; it does not change across restarts.
func (k *Kafka) Brokers() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port))}
}

// Start restarts a stopped broker on the same ports and data and waits until
// it answers.
// A node of a KafkaCluster is ready once it is registered again (metadata
// lists every node) and every partition has a leader that serves it.
func (k *Kafka) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.launch(); err != nil {
		return err
	}
	return k.awaitReady(k.node.startTimeout)
}

// launch starts the JVM without waiting for it (k.mu held): the nodes of a
// cluster must all run before any can elect a controller.
func (k *Kafka) launch() error {
	if k.p.Running() {
		return fmt.Errorf("testenv: Kafka node %d is already running", k.node.id)
	}
	args := append(k.jvmArgs(k.node.heap...), "kafka.Kafka", filepath.Join(k.dir, "server.properties"))
	cmd := exec.Command(k.java, args...)
	cmd.Dir = k.dir
	p, err := proc.Start(cmd, filepath.Join(k.dir, "broker.log"), nil)
	if err != nil {
		return err
	}
	k.p = p
	return nil
}

// awaitReady waits until the launched node serves every partition (k.mu
// held); on timeout it kills the node.
func (k *Kafka) awaitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := k.p.AwaitReady(ctx, 200*time.Millisecond, func(context.Context) error {
		_, err := kafkaReady(k.Brokers()[0], k.SaramaVersion(), k.node.brokers)
		return err
	})
	if err != nil {
		return fmt.Errorf("Kafka node %d on %s did not start (timeout %s): %w\n%s", k.node.id, k.Brokers()[0], timeout, err, k.p.LogTail(60))
	}
	return nil
}

// Stop shuts the broker down cleanly (SIGTERM) and waits for it to exit.
func (k *Kafka) Stop() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.p.Running() {
		return errors.New("testenv: Kafka is not running")
	}
	k.p.Stop(syscall.SIGTERM, kafkaStopTimeout)
	return nil
}

// Kill crashes the broker (SIGKILL), as a power cut would.
func (k *Kafka) Kill() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.p.Running() {
		return errors.New("testenv: Kafka is not running")
	}
	k.p.Kill()
	return nil
}

// CreateTopic creates a topic (replication factor 1) and waits until every
// partition has a leader, so producing right after does not fail.
func (k *Kafka) CreateTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	createTopic(t, k.Name(), k.Brokers(), k.SaramaVersion(), name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1})
}

// createTopic creates a topic and waits until every partition has a leader
// that serves it and all its replicas in sync, so producing right after
// with acks=all does not fail.
func createTopic(t testing.TB, what string, brokers []string, v sarama.KafkaVersion, name string, detail *sarama.TopicDetail) {
	t.Helper()
	cfg := kafka.NewConfig("flowpipeline-testenv", v)
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatalf("create topic %q: connect to %s: %v", name, what, err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(name, detail, false); err != nil {
		t.Fatalf("create topic %q with %d partitions, replication %d: %v", name, detail.NumPartitions, detail.ReplicationFactor, err)
	}
	const timeout = 30 * time.Second
	err = poll(timeout, func() error {
		return anyBroker(brokers, func(addr string) error {
			st, err := kafkaReady(addr, v, 0, name)
			if err != nil {
				return err
			}
			if n := len(st.partitions[name]); n != int(detail.NumPartitions) {
				return fmt.Errorf("%d of %d partitions seen", n, detail.NumPartitions)
			}
			return st.inSync(name)
		})
	})
	if err != nil {
		t.Fatalf("topic %q created but not ready after %s: %v", name, timeout, err)
	}
}

// poll calls f every 100 ms until it succeeds, or returns its last error
// after timeout.
func poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// anyBroker calls f with each address in turn until one succeeds: a
// cluster may have a node down.
func anyBroker(addrs []string, f func(addr string) error) error {
	var errs []error
	for _, a := range addrs {
		err := f(a)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	return errors.Join(errs...)
}

// jvmArgs are the java options before the main class. The C1-only JIT and
// the serial GC start the JVM faster and leave more of a 2-core machine to
// the tests; a test broker's throughput matters less than its start time.
func (k *Kafka) jvmArgs(heap ...string) []string {
	return append(heap,
		"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+filepath.Join(k.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.libs, "*"), // the JVM expands the wildcard itself
	)
}

func (k *Kafka) describe() string { return k.Name() + " on " + k.Brokers()[0] }

// close stops the broker and removes its directory (test cleanup, Main).
func (k *Kafka) close() {
	k.mu.Lock()
	if k.p.Running() {
		k.p.Stop(syscall.SIGTERM, kafkaStopTimeout)
	}
	k.mu.Unlock()
	os.RemoveAll(k.dir)
}

// kafkaState is what a broker's metadata says about the cluster.
type kafkaState struct {
	brokers    map[int32]string // registered (unfenced) nodes by node.id
	partitions map[string][]*sarama.PartitionMetadata
}

// inSync fails unless every partition of topics has all its replicas in
// sync: a restarted node has caught up, and acks=all has every replica.
func (s *kafkaState) inSync(topics ...string) error {
	for _, topic := range topics {
		for _, p := range s.partitions[topic] {
			if len(p.Isr) != len(p.Replicas) {
				return fmt.Errorf("topic %s partition %d: in-sync replicas %v of %v", topic, p.ID, p.Isr, p.Replicas)
			}
		}
	}
	return nil
}

// kafkaReady reports whether the broker at addr sees nodes brokers
// registered (0: any) and every partition of topics (none: all, the
// internal ones included, which consumer groups and transactions need)
// served, and returns the metadata. After a restart the broker answers
// before it leads its partitions again: metadata first shows no leader,
// then a leader whose replica manager still answers NOT_LEADER_OR_FOLLOWER,
// so producing right then fails. A ListOffsets per partition, sent to its
// leader, catches both.
func kafkaReady(addr string, v sarama.KafkaVersion, nodes int, topics ...string) (*kafkaState, error) {
	cfg := kafka.NewConfig("flowpipeline-testenv", v, kafka.DialTimeout(time.Second))
	cfg.Net.ReadTimeout = 2 * time.Second
	b := sarama.NewBroker(addr)
	if err := b.Open(cfg); err != nil {
		return nil, err
	}
	defer b.Close()
	resp, err := b.GetMetadata(sarama.NewMetadataRequest(v, topics))
	if err != nil {
		return nil, err
	}
	st := &kafkaState{brokers: map[int32]string{}, partitions: map[string][]*sarama.PartitionMetadata{}}
	for _, br := range resp.Brokers {
		st.brokers[br.ID()] = br.Addr()
	}
	if len(st.brokers) == 0 || len(st.brokers) < nodes {
		// A node killed and restarted registers again only once the
		// controller has expired its old session (broker.session.timeout.ms).
		return nil, fmt.Errorf("metadata lists %d of %d nodes", len(st.brokers), max(nodes, 1))
	}
	reqs := map[int32]*sarama.OffsetRequest{} // by leader
	for _, tm := range resp.Topics {
		if tm.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("topic %s: %w", tm.Name, tm.Err)
		}
		for _, pm := range tm.Partitions {
			if pm.Err != sarama.ErrNoError || pm.Leader < 0 {
				return nil, fmt.Errorf("topic %s partition %d has no leader yet (%v)", tm.Name, pm.ID, pm.Err)
			}
			if reqs[pm.Leader] == nil {
				reqs[pm.Leader] = sarama.NewOffsetRequest(v)
			}
			reqs[pm.Leader].AddBlock(tm.Name, pm.ID, sarama.OffsetNewest, 1)
		}
		st.partitions[tm.Name] = tm.Partitions
	}
	for leader, req := range reqs {
		lb := b
		if a, ok := st.brokers[leader]; !ok {
			return nil, fmt.Errorf("partition leader %d is not a registered node", leader)
		} else if a != addr {
			lb = sarama.NewBroker(a)
			if err := lb.Open(cfg); err != nil {
				return nil, err
			}
			defer lb.Close()
		}
		offsets, err := lb.GetAvailableOffsets(req)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", leader, err)
		}
		for topic, blocks := range offsets.Blocks {
			for id, block := range blocks {
				if block.Err != sarama.ErrNoError {
					return nil, fmt.Errorf("topic %s partition %d not served yet by node %d: %w", topic, id, leader, block.Err)
				}
			}
		}
	}
	return st, nil
}

// kafkaJars checks the prerequisites of a real broker: java and the jars.
// Missing ones are errUnavailable. The returned Kafka has no directory yet.
func kafkaJars() (*Kafka, error) {
	java, err := findJava()
	if err != nil {
		return nil, err
	}
	libs := os.Getenv("FLOWPIPELINE_KAFKA_LIBS")
	if libs == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, unavailablef("cannot locate the Kafka jars (%v); set FLOWPIPELINE_KAFKA_LIBS or run `make kafka-libs`", err)
		}
		libs = filepath.Join(root, ".cache", "kafka", "libs")
	}
	jars, _ := filepath.Glob(filepath.Join(libs, "kafka_2.13-*.jar"))
	if len(jars) != 1 {
		return nil, unavailablef("no Kafka jars in %s (found %d kafka_2.13-*.jar); run `make kafka-libs`", libs, len(jars))
	}
	version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(jars[0]), "kafka_2.13-"), ".jar")
	return &Kafka{version: version, java: java, libs: libs}, nil
}

// startKafka checks the prerequisites, writes the configuration, formats the
// storage and starts the broker. Missing java or jars are errUnavailable.
func startKafka() (*Kafka, error) {
	k, err := kafkaJars()
	if err != nil {
		return nil, err
	}
	if k.port, err = proc.FreePort(); err != nil {
		return nil, err
	}
	controllerPort, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	k.node = singleNode(controllerPort)
	if k.dir, err = serviceDir("kafka"); err != nil {
		return nil, err
	}
	// Same as `kafka-storage.sh format --standalone`: a quorum of itself.
	if err := k.setup(clusterID(), "--standalone"); err != nil {
		os.RemoveAll(k.dir)
		return nil, err
	}
	if err := k.Start(); err != nil {
		os.RemoveAll(k.dir)
		return nil, err
	}
	return k, nil
}

func findJava() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if java := filepath.Join(home, "bin", "java"); isExecutable(java) {
			return java, nil
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", unavailablef("java not found on PATH nor in JAVA_HOME; install Java 17+ (apt-get install openjdk-17-jre-headless), then run `make kafka-libs`")
	}
	return java, nil
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// setup writes the configuration of k.node and formats the storage (KRaft
// refuses to start on an unformatted log dir) as part of cluster id, with
// formatArgs such as --standalone.
func (k *Kafka) setup(id string, formatArgs ...string) error {
	n := k.node
	props := fmt.Sprintf(`# Written by internal/testkit/testenv: a private test broker.
process.roles=broker,controller
node.id=%[4]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
%[5]s
log.dirs=%[3]s
num.partitions=1
auto.create.topics.enable=true
default.replication.factor=%[6]d
min.insync.replicas=%[7]d
offsets.topic.replication.factor=%[6]d
# 5 partitions instead of 50 for the internal topics: clients cannot tell,
# and the first group join and each restart have less to create and load.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
transaction.state.log.replication.factor=%[6]d
transaction.state.log.min.isr=%[7]d
share.coordinator.state.topic.replication.factor=%[6]d
share.coordinator.state.topic.min.isr=%[7]d
# Consumer groups form at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted broker cannot re-register until its old
# session expires (DuplicateBrokerRegistrationException), and in a cluster
# the dead node's partitions get new leaders only then: 4 s, not 9 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
# Fewer threads than the defaults: this machine has 2 cores.
num.network.threads=2
num.io.threads=2
background.threads=2
`, k.port, n.controllerPort, filepath.Join(k.dir, "data"), n.id, n.quorum, n.replication, n.minISR)
	// Broker logs go to stdout, i.e. broker.log; a failed start shows its tail.
	log4j := `rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
`
	if err := os.WriteFile(filepath.Join(k.dir, "server.properties"), []byte(props), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(k.dir, "log4j2.properties"), []byte(log4j), 0o644); err != nil {
		return err
	}
	// Same as `kafka-storage.sh format -t <id> -c server.properties [formatArgs]`.
	args := append(k.jvmArgs("-Xmx256m"), "kafka.tools.StorageTool", "format", "-t", id, "-c", filepath.Join(k.dir, "server.properties"))
	cmd := exec.Command(k.java, append(args, formatArgs...)...)
	cmd.Dir = k.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("format Kafka storage (%s): %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// clusterID returns a random Kafka cluster id (Uuid.randomUuid's format:
// 16 random bytes, base64url without padding, never starting with '-').
func clusterID() string {
	for {
		var b [16]byte
		rand.Read(b[:])
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}
