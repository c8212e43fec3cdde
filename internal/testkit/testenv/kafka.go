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

	mu sync.Mutex
	p  *proc.Proc
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
func (k *Kafka) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.p.Running() {
		return errors.New("testenv: Kafka is already running")
	}
	args := append(k.jvmArgs("-Xmx512m", "-Xms128m"), "kafka.Kafka", filepath.Join(k.dir, "server.properties"))
	cmd := exec.Command(k.java, args...)
	cmd.Dir = k.dir
	p, err := proc.Start(cmd, filepath.Join(k.dir, "broker.log"), nil)
	if err != nil {
		return err
	}
	k.p = p
	ctx, cancel := context.WithTimeout(context.Background(), kafkaStartTimeout)
	defer cancel()
	// Ready: metadata with a leader for every partition, each served.
	err = p.AwaitReady(ctx, 200*time.Millisecond, func(context.Context) error {
		_, err := kafkaReady(k.Brokers()[0], k.SaramaVersion())
		return err
	})
	if err != nil {
		return fmt.Errorf("Kafka broker did not start (timeout %s): %w\n%s", kafkaStartTimeout, err, p.LogTail(60))
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
	cfg := kafka.NewConfig("flowpipeline-testenv", k.SaramaVersion())
	admin, err := sarama.NewClusterAdmin(k.Brokers(), cfg)
	if err != nil {
		t.Fatalf("create topic %q: connect to %s: %v", name, k.Name(), err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false); err != nil {
		t.Fatalf("create topic %q with %d partitions: %v", name, partitions, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		counts, err := kafkaReady(k.Brokers()[0], cfg.Version, name)
		if err == nil && counts[name] == int(partitions) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %q created but not ready after 30s: %d of %d partitions seen, last error: %v", name, counts[name], partitions, err)
		}
	}
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

// kafkaReady reports whether the broker serves every partition of topics
// (none: all, the internal ones included, which consumer groups need) and
// returns their partition counts. After a restart the broker answers before
// it leads its partitions again: metadata first shows no leader, then a
// leader whose replica manager still answers NOT_LEADER_OR_FOLLOWER, so
// producing right then fails. A ListOffsets per partition catches both.
func kafkaReady(addr string, v sarama.KafkaVersion, topics ...string) (map[string]int, error) {
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
	if len(resp.Brokers) == 0 {
		return nil, errors.New("metadata lists no brokers")
	}
	counts := map[string]int{}
	for _, tm := range resp.Topics {
		if tm.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("topic %s: %w", tm.Name, tm.Err)
		}
		for _, pm := range tm.Partitions {
			if pm.Err != sarama.ErrNoError || pm.Leader < 0 {
				return nil, fmt.Errorf("topic %s partition %d has no leader yet (%v)", tm.Name, pm.ID, pm.Err)
			}
		}
		counts[tm.Name] = len(tm.Partitions)
	}
	if len(counts) == 0 {
		return counts, nil
	}
	req := sarama.NewOffsetRequest(v)
	for _, tm := range resp.Topics {
		for _, pm := range tm.Partitions {
			req.AddBlock(tm.Name, pm.ID, sarama.OffsetNewest, 1)
		}
	}
	offsets, err := b.GetAvailableOffsets(req)
	if err != nil {
		return nil, err
	}
	for topic, blocks := range offsets.Blocks {
		for id, block := range blocks {
			if block.Err != sarama.ErrNoError {
				return nil, fmt.Errorf("topic %s partition %d not served yet: %w", topic, id, block.Err)
			}
		}
	}
	return counts, nil
}

// startKafka checks the prerequisites, writes the configuration, formats the
// storage and starts the broker. Missing java or jars are errUnavailable.
func startKafka() (*Kafka, error) {
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

	dir, err := serviceDir("kafka")
	if err != nil {
		return nil, err
	}
	k := &Kafka{version: version, java: java, libs: libs, dir: dir}
	if err := k.setup(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := k.Start(); err != nil {
		os.RemoveAll(dir)
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

// setup picks the ports, writes the configuration and formats the storage
// (KRaft refuses to start on an unformatted log dir).
func (k *Kafka) setup() error {
	var err error
	if k.port, err = proc.FreePort(); err != nil {
		return err
	}
	controllerPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	props := fmt.Sprintf(`# Written by internal/testkit/testenv: a private single-node test broker.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:%[2]d
log.dirs=%[3]s
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
# 5 partitions instead of 50 for the internal topics: clients cannot tell,
# and the first group join and each restart have less to create and load.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumer groups form at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted broker cannot re-register until its old
# session expires (DuplicateBrokerRegistrationException): 4 s, not 9 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
# Fewer threads than the defaults: this machine has 2 cores.
num.network.threads=2
num.io.threads=2
`, k.port, controllerPort, filepath.Join(k.dir, "data"))
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
	// Same as `kafka-storage.sh format --standalone -t <id> -c server.properties`.
	args := append(k.jvmArgs("-Xmx256m"), "kafka.tools.StorageTool", "format", "--standalone",
		"-t", clusterID(), "-c", filepath.Join(k.dir, "server.properties"))
	cmd := exec.Command(k.java, args...)
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
