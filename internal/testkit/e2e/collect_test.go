// Package e2e runs the collect path end to end on real programs: router
// captures replayed over UDP to a real goflow2, which writes to a real Kafka
// 4 broker, which the inserter drains into a throwaway PostgreSQL.
package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/inserter"
	flowkafka "github.com/spendletonliveaction/flow-pipeline/internal/kafka"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/pcap"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/promtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// goflow2Version is the collector release the Makefile builds (make goflow2).
const goflow2Version = "v2.2.6"

// capture is one replayed datagram and what it must yield, counted from
// its own headers rather than from goflow2's output.
type capture struct {
	file     string
	listener string // goflow2 listener: "netflow" or "sflow"
	flowType pb.FlowMessage_FlowType
}

// Order matters: the NetFlow v9 templates must arrive before their data.
var captures = []capture{
	{"netflow-nfv5.pcap", "netflow", pb.FlowMessage_NETFLOW_V5},
	{"netflow-template.pcap", "netflow", pb.FlowMessage_NETFLOW_V9},
	{"netflow-data.pcap", "netflow", pb.FlowMessage_NETFLOW_V9},
	{"sflow-data-1140.pcap", "sflow", pb.FlowMessage_SFLOW_5},
	{"sflow-data-icmpv6.pcap", "sflow", pb.FlowMessage_SFLOW_5},
}

// collectEnv is what a collect-path test runs on: the goflow2 binary, the
// shared Kafka 4 broker with a new two-partition topic, and a new
// PostgreSQL database.
func collectEnv(t *testing.T, db string) (binary string, kafka *testenv.Kafka, topic, dsn string) {
	t.Helper()
	binary = goflow2Binary(t)
	kafka = testenv.SharedKafka(t)
	t.Logf("broker: %s", kafka.Name())
	topic = testenv.UniqueName(t)
	kafka.CreateTopic(t, topic, 2)
	return binary, kafka, topic, testenv.SharedPostgres(t).CreateDB(t, db)
}

func TestRouterCapturesThroughGoflow2IntoPostgres(t *testing.T) {
	binary, kafka, topic, dsn := collectEnv(t, "e2e")

	// What each datagram must produce, from the datagrams themselves.
	want := map[pb.FlowMessage_FlowType]int{}
	var payloads [][]byte
	templates := map[uint16]int{}
	for _, c := range captures {
		payload := readUDPPayload(t, filepath.Join("testdata", c.file))
		n, err := flowRecordsIn(payload, templates)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		want[c.flowType] += n
		payloads = append(payloads, payload)
	}
	t.Logf("flows in the captures: %v", want)
	if want[pb.FlowMessage_NETFLOW_V5] != 29 {
		t.Fatalf("netflow-nfv5.pcap holds %d records, its provenance note says 29", want[pb.FlowMessage_NETFLOW_V5])
	}

	g := startGoflow2(t, binary, kafka.Brokers()[0], topic, stackGoflow2Flags...)
	ports, httpAddr := g.ports, g.httpAddr

	// One socket per listener: goflow2 keys NetFlow templates by exporter
	// address and port, as a router's would be.
	exporters := map[string]net.Conn{}
	for listener, port := range ports {
		conn, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		exporters[listener] = conn
	}
	for i, c := range captures {
		if _, err := exporters[c.listener].Write(payloads[i]); err != nil {
			t.Fatal(err)
		}
		// Give goflow2 time to learn templates before their data arrives.
		time.Sleep(50 * time.Millisecond)
	}
	// A datagram that is no export at all: goflow2 counts a decoder error
	// (a metric the Pipeline dashboard charts) and produces nothing.
	if _, err := exporters["netflow"].Write([]byte("not a flow export")); err != nil {
		t.Fatal(err)
	}

	// What goflow2 put on the topic, decoded with our contract.
	got, bytesOnTopic := consumeAll(t, kafka, topic, sum(want))

	// The Pipeline dashboard charts goflow2's metrics by name: the real
	// collector, having decoded every protocol, must export each of them.
	// Labelled series appear once counted, so poll briefly.
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		exported := httpBody(t, "http://"+httpAddr+"/metrics")
		missing = missing[:0]
		for _, name := range dashboardMetrics(t, "goflow2_") {
			if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(exported) {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, name := range missing {
		t.Errorf("the Pipeline dashboard charts %s, which goflow2 %s does not export", name, goflow2Version)
	}
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("topic holds %d %s flows, the captures hold %d", got[typ], typ, n)
		}
	}

	reg := prometheus.NewRegistry()
	storeTopic(t, kafka, topic, dsn, uint64(sum(want)), 0, reg)

	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT type, count(*), sum(bytes)::bigint FROM flows GROUP BY type`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[pb.FlowMessage_FlowType]int{}
	var storedBytes uint64
	for rows.Next() {
		var typ, n int
		var b int64
		if err := rows.Scan(&typ, &n, &b); err != nil {
			t.Fatal(err)
		}
		stored[pb.FlowMessage_FlowType(typ)] = n
		storedBytes += uint64(b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for typ, n := range want {
		if stored[typ] != n {
			t.Errorf("PostgreSQL holds %d %s flows, want %d", stored[typ], typ, n)
		}
	}
	if storedBytes != bytesOnTopic {
		t.Errorf("sum(bytes) in PostgreSQL = %d, on the topic = %d", storedBytes, bytesOnTopic)
	}

	// NetFlow v5 carries no sampling rate: stored as sent (0) and counted.
	var zeroRate int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*) FROM flows WHERE sampling_rate = 0`).Scan(&zeroRate); err != nil {
		t.Fatal(err)
	}
	counted := int(counterValue(t, reg, "flowpipeline_inserter_flows_zero_sampling_rate_total"))
	if zeroRate < want[pb.FlowMessage_NETFLOW_V5] || counted != zeroRate {
		t.Errorf("%d rows with sampling_rate 0 (NetFlow v5 alone has %d), metric counted %d", zeroRate, want[pb.FlowMessage_NETFLOW_V5], counted)
	}

	// Addresses: the NetFlow v5 records are IPv4 and must read back dotted.
	var v4, mapped int
	if err := conn.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE family(src_addr) = 4 AND family(dst_addr) = 4),
		count(*) FILTER (WHERE host(src_addr) LIKE '::ffff:%' OR host(dst_addr) LIKE '::ffff:%')
		FROM flows WHERE type = $1`, int(pb.FlowMessage_NETFLOW_V5)).Scan(&v4, &mapped); err != nil {
		t.Fatal(err)
	}
	if v4 != want[pb.FlowMessage_NETFLOW_V5] || mapped != 0 {
		t.Errorf("NetFlow v5 rows: %d with IPv4 addresses (want %d), %d shown IPv4-mapped (want 0)", v4, want[pb.FlowMessage_NETFLOW_V5], mapped)
	}
}

// storeTopic runs an inserter from topic into dsn until it has stored
// want flows (a minute at most) and settle more has passed, so that
// anything beyond want would be stored too, then stops it.
func storeTopic(t testing.TB, kafka *testenv.Kafka, topic, dsn string, want uint64, settle time.Duration, reg prometheus.Registerer) {
	t.Helper()
	ins, err := inserter.New(inserter.Config{Brokers: kafka.Brokers(), Topic: topic, Group: topic,
		KafkaVersion: kafka.Version(), PostgresDSN: dsn}, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ins.Run(ctx) }()
	for deadline := time.Now().Add(time.Minute); ins.Stored() < want && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(settle)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("inserter: %v", err)
	}
}

// goflow2Proc is a running goflow2 writing to a Kafka topic.
type goflow2Proc struct {
	ports    map[string]int // UDP port by listener: "sflow", "netflow"
	httpAddr string         // /metrics and /__health
	cmd      *exec.Cmd
}

// startGoflow2 runs goflow2 on 127.0.0.1 with an sFlow and a NetFlow/IPFIX
// listener on free ports, writing -format=bin to topic, as the collect
// stacks run it, plus flags; it is stopped when the test ends (its log
// shown if the test failed).
func startGoflow2(t testing.TB, binary, broker, topic string, flags ...string) *goflow2Proc {
	t.Helper()
	g := &goflow2Proc{ports: map[string]int{"sflow": freeUDPPort(t), "netflow": freeUDPPort(t)},
		httpAddr: fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))}
	g.cmd = exec.Command(binary, append([]string{
		"-listen", fmt.Sprintf("sflow://127.0.0.1:%d,netflow://127.0.0.1:%d", g.ports["sflow"], g.ports["netflow"]),
		"-transport=kafka",
		"-transport.kafka.brokers=" + broker,
		"-transport.kafka.topic=" + topic,
		"-format=bin",
		"-addr=" + g.httpAddr,
		"-templates.path=/__templates",
	}, flags...)...)
	logPath := filepath.Join(t.TempDir(), "goflow2.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd.Stdout, g.cmd.Stderr = logFile, logFile
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start goflow2: %v", err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Signal(os.Interrupt)
		g.cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("goflow2 log:\n%s", out)
		}
	})
	waitHealthy(t, "http://"+g.httpAddr+"/__health")
	return g
}

// stackGoflow2Flags are the flags the collect stacks give goflow2 beyond
// its listeners, transport and format (compose/services.yml; the compose
// tests pin them): its Kafka flush every 100 ms rather than its own 5 s.
var stackGoflow2Flags = []string{"-transport.kafka.flushfreq=100ms"}

func httpBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// dashboardMetrics lists the metric names with this prefix that the
// Pipeline dashboard queries.
func dashboardMetrics(t *testing.T, prefix string) []string {
	t.Helper()
	dashboard, err := os.ReadFile(filepath.Join("..", "..", "..", "grafana", "dashboards", "pipeline.json"))
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(regexp.QuoteMeta(prefix)+`[a-z0-9_]+`).FindAllString(string(dashboard), -1)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		t.Fatalf("the Pipeline dashboard queries no %s* metric", prefix)
	}
	return names
}

func goflow2Binary(t testing.TB) string {
	path := filepath.Join("..", "..", "..", ".cache", "bin", "goflow2-"+goflow2Version)
	if p := os.Getenv("FLOWPIPELINE_GOFLOW2"); p != "" {
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		testenv.Unavailable(t, "goflow2 %s is not built (%v): run `make goflow2`", goflow2Version, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// flowRecordsIn counts the flow records a NetFlow v5/v9 or sFlow v5
// datagram carries, from its headers alone. templates maps NetFlow v9
// template ids to record lengths, filled as templates go by.
func flowRecordsIn(d []byte, templates map[uint16]int) (int, error) {
	if len(d) < 4 {
		return 0, fmt.Errorf("datagram of %d bytes", len(d))
	}
	switch version := binary.BigEndian.Uint16(d[0:2]); {
	case version == 5:
		return int(binary.BigEndian.Uint16(d[2:4])), nil
	case version == 9:
		return netflow9DataRecords(d, templates)
	case binary.BigEndian.Uint32(d[0:4]) == 5:
		return sflowFlowSamples(d)
	default:
		return 0, fmt.Errorf("unknown export version %d", version)
	}
}

// netflow9DataRecords counts data records: flowsets with id >= 256, each
// record as long as its template. Templates (flowset 0) define the lengths.
func netflow9DataRecords(d []byte, templates map[uint16]int) (int, error) {
	records := 0
	for off := 20; off+4 <= len(d); {
		id := binary.BigEndian.Uint16(d[off:])
		length := int(binary.BigEndian.Uint16(d[off+2:]))
		if length < 4 || off+length > len(d) {
			return 0, fmt.Errorf("flowset %d at %d: bad length %d", id, off, length)
		}
		body := d[off+4 : off+length]
		switch {
		case id == 0: // templates: id, field count, then (type, length) pairs
			for p := 0; p+4 <= len(body); {
				tid := binary.BigEndian.Uint16(body[p:])
				fields := int(binary.BigEndian.Uint16(body[p+2:]))
				size := 0
				for f := 0; f < fields; f++ {
					size += int(binary.BigEndian.Uint16(body[p+4+4*f+2:]))
				}
				templates[tid] = size
				p += 4 + 4*fields
			}
		case id >= 256:
			size, ok := templates[id]
			if !ok || size == 0 {
				return 0, fmt.Errorf("data flowset %d before its template", id)
			}
			records += len(body) / size // the rest is padding
		}
		off += length
	}
	return records, nil
}

// sflowFlowSamples counts flow samples (formats 1 and 3); counter samples
// produce no flows.
func sflowFlowSamples(d []byte) (int, error) {
	off := 8
	switch binary.BigEndian.Uint32(d[4:8]) { // agent address type
	case 1:
		off += 4
	case 2:
		off += 16
	default:
		return 0, fmt.Errorf("sFlow agent address type %d", binary.BigEndian.Uint32(d[4:8]))
	}
	off += 12 // sub-agent id, sequence number, uptime
	samples := int(binary.BigEndian.Uint32(d[off:]))
	off += 4
	flows := 0
	for i := 0; i < samples; i++ {
		if off+8 > len(d) {
			return 0, fmt.Errorf("sFlow sample %d runs past the datagram", i)
		}
		format := binary.BigEndian.Uint32(d[off:]) & 0xfff
		length := int(binary.BigEndian.Uint32(d[off+4:]))
		if format == 1 || format == 3 {
			flows++
		}
		off += 8 + length
	}
	return flows, nil
}

// readUDPPayload returns the UDP payload of the one packet in a classic
// little-endian pcap file of Ethernet frames carrying IPv4.
func readUDPPayload(t *testing.T, path string) []byte {
	t.Helper()
	payload, err := pcap.UDPPayload(path)
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

func consumeAll(t *testing.T, kafka *testenv.Kafka, topic string, want int) (map[pb.FlowMessage_FlowType]int, uint64) {
	t.Helper()
	cfg := flowkafka.NewConfig("", kafka.SaramaVersion())
	consumer, err := sarama.NewConsumer(kafka.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	partitions, err := consumer.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	records := make(chan []byte)
	for _, p := range partitions {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				records <- m.Value
			}
		}()
	}
	counts := map[pb.FlowMessage_FlowType]int{}
	var bytes uint64
	total := 0
	var msg pb.FlowMessage
	timeout := time.After(30 * time.Second)
	for total < want {
		select {
		case v := <-records:
			err := pb.UnmarshalRecord(v, &msg, func(m *pb.FlowMessage) error {
				counts[m.Type]++
				bytes += m.Bytes
				total++
				return nil
			})
			if err != nil {
				t.Fatalf("goflow2 wrote a record our contract cannot read: %v", err)
			}
		case <-timeout:
			t.Fatalf("topic holds %d flows after 30s, want %d", total, want)
		}
	}
	// Anything beyond the expected flows would be a duplicate or a stray.
	select {
	case v := <-records:
		t.Fatalf("unexpected extra record of %d bytes on the topic", len(v))
	case <-time.After(time.Second):
	}
	return counts, bytes
}

// counterValue reads a counter without labels from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func sum(m map[pb.FlowMessage_FlowType]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func waitHealthy(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("goflow2 not healthy at %s after 20s", url)
}

func freeUDPPort(t testing.TB) int { return promtest.FreeUDPPort(t) }

func freeTCPPort(t testing.TB) int { return promtest.FreePort(t) }
