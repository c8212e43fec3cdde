package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// udpDrops are the kernel's UDP drop counters: the host's (/proc/net/snmp)
// and those of the sockets bound to some ports (/proc/net/udp).
type udpDrops struct {
	inErrors, rcvbufErrors uint64
	sockets                uint64 // drops of the sockets on the ports
}

func readUDPDrops(t testing.TB, ports ...int) udpDrops {
	t.Helper()
	var d udpDrops
	snmp, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		testenv.Unavailable(t, "the kernel's UDP counters (/proc/net/snmp): %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(snmp), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		fields := strings.Fields(line)[1:]
		if names == nil {
			names = fields
			continue
		}
		for i, v := range fields {
			n, _ := strconv.ParseUint(v, 10, 64)
			switch names[i] {
			case "InErrors":
				d.inErrors = n
			case "RcvbufErrors":
				d.rcvbufErrors = n
			}
		}
	}
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("%04X", p)] = true
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 || fields[0] == "sl" {
			continue
		}
		_, port, _ := strings.Cut(fields[1], ":")
		if want[port] {
			n, _ := strconv.ParseUint(fields[len(fields)-1], 10, 64)
			d.sockets += n
		}
	}
	return d
}

// metricSum sums the samples of a metric in a Prometheus text exposition.
func metricSum(exposition, name string) float64 {
	var sum float64
	for _, m := range regexp.MustCompile(`(?m)^`+name+`(?:\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(exposition, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// collectRate is the rate of the end-to-end test. goflow2 does not size
// its socket's receive buffer: with Linux's default (208 KiB) it holds
// about a quarter of a second of datagrams at 20,000 flows/s, and a
// 2-core machine running the whole suite can deschedule goflow2 for that
// long (make bench-collect measured drops at 10,000 flows/s with a load
// average of 30). At 5,000 flows/s the buffer holds a second.
const collectRate = 5_000

// sendThroughGoflow2 runs the mocker library with each output in turn
// against g and returns the summaries.
func sendThroughGoflow2(t testing.TB, g *goflow2Proc, outputs []string, count uint64, rate float64) []mocker.Summary {
	t.Helper()
	var out []mocker.Summary
	for i, output := range outputs {
		port := g.ports["netflow"]
		if output == mocker.OutputSFlow {
			port = g.ports["sflow"]
		}
		m, err := mocker.New(mocker.Config{Output: output, Collector: fmt.Sprintf("127.0.0.1:%d", port),
			Count: count, Rate: rate, Seed: int64(i + 1), ProgressInterval: -1}, testLogger(t), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Summary())
	}
	return out
}

// TestMockerThroughGoflow2IntoPostgres sends the mocker's IPFIX, NetFlow v9
// and sFlow datagrams to the real goflow2, which writes to the real Kafka 4
// broker, which the inserter drains into PostgreSQL: the stored flows,
// bytes, packets and scaled bytes and packets equal the mocker's summary
// per exporter and type. The kernel's drop counters for goflow2's sockets
// and goflow2's own count of datagrams prove nothing was lost on the way.
func TestMockerThroughGoflow2IntoPostgres(t *testing.T) {
	binary, kafka, topic, dsn := collectEnv(t, "mocker")
	g := startGoflow2(t, binary, kafka.Brokers()[0], topic, stackGoflow2Flags...)

	before := readUDPDrops(t, g.ports["sflow"], g.ports["netflow"])
	// The larger run (100,000 flows at 20,000/s) by hand:
	// FLOWPIPELINE_COLLECT_COUNT=100000 FLOWPIPELINE_COLLECT_RATE=20000.
	perOutput := uint64(envInt(t, "FLOWPIPELINE_COLLECT_COUNT", 10_000))
	collectRate := float64(envInt(t, "FLOWPIPELINE_COLLECT_RATE", collectRate))
	summaries := sendThroughGoflow2(t, g, []string{mocker.OutputIPFIX, mocker.OutputNetFlowV9, mocker.OutputSFlow}, perOutput, collectRate)

	type key struct{ address, typ string }
	want := map[key]mocker.Counts{}
	var flows, datagrams uint64
	for _, s := range summaries {
		if s.Totals.Flows != perOutput {
			t.Fatalf("%s: the mocker sent %d flows, want %d", s.Output, s.Totals.Flows, perOutput)
		}
		for _, e := range s.Exporters {
			want[key{e.Address, e.Type}] = e.Counts
		}
		flows += s.Totals.Flows
		datagrams += s.Totals.Datagrams
	}

	// goflow2 read every datagram: its own count, once it has caught up.
	var got float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		exp := httpBody(t, "http://"+g.httpAddr+"/metrics")
		got = metricSum(exp, "goflow2_flow_traffic_packets_total")
		if got == float64(datagrams) {
			if e := metricSum(exp, "goflow2_flow_decoder_error_total"); e != 0 {
				t.Errorf("goflow2 counted %v decoder errors", e)
			}
			break
		}
	}
	after := readUDPDrops(t, g.ports["sflow"], g.ports["netflow"])
	t.Logf("%d flows in %d datagrams at %.0f flows/s; goflow2 received %v datagrams; kernel UDP drops on goflow2's sockets %d → %d, host InErrors %d → %d, RcvbufErrors %d → %d",
		flows, datagrams, collectRate, got, before.sockets, after.sockets, before.inErrors, after.inErrors, before.rcvbufErrors, after.rcvbufErrors)
	if after.sockets != before.sockets {
		t.Errorf("the kernel dropped %d datagrams on goflow2's sockets", after.sockets-before.sockets)
	}
	if got != float64(datagrams) {
		t.Fatalf("goflow2 received %v datagrams, the mocker sent %d", got, datagrams)
	}

	// Anything beyond the flows sent would be a duplicate: a second to show.
	storeTopic(t, kafka, topic, dsn, flows, time.Second, prometheus.NewRegistry())

	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT host(sampler_address), type, count(*),
		sum(bytes)::bigint, sum(packets)::bigint,
		sum(bytes * greatest(sampling_rate, 1))::bigint, sum(packets * greatest(sampling_rate, 1))::bigint
		FROM flows GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[key]mocker.Counts{}
	for rows.Next() {
		var addr string
		var typ int16
		var c [5]int64
		if err := rows.Scan(&addr, &typ, &c[0], &c[1], &c[2], &c[3], &c[4]); err != nil {
			t.Fatal(err)
		}
		stored[key{addr, pb.FlowMessage_FlowType(typ).String()}] = mocker.Counts{Flows: uint64(c[0]), Bytes: uint64(c[1]),
			Packets: uint64(c[2]), ScaledBytes: uint64(c[3]), ScaledPackets: uint64(c[4])}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(want) {
		t.Errorf("PostgreSQL holds %d (exporter, type) pairs, the summaries %d: %v", len(stored), len(want), stored)
	}
	for k, w := range want {
		w.Datagrams = 0
		if stored[k] != w {
			t.Errorf("%s %s: PostgreSQL holds %+v, the summary says %+v", k.address, k.typ, stored[k], w)
		}
	}
}

// envInt reads a positive integer from the environment, or gives def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	t.Logf("%s=%d", name, n)
	return n
}
