package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/goflow2test"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// buildMocker builds this command into a temporary directory.
func buildMocker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mocker")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-rate", "fast"},
		{"-no.such.flag"},
		{"-kafka.version", "2.0.0"},
		{"-kafka.compression", "brotli"},
		{"-loglevel", "chatty"},
		{"-rate", "-5"},
		{"-flows-per-record", "ten"},
		{"-flows-per-record", "0"},
		{"-flows-per-record", "-3"},
		{"-flows-per-record", "1001"},
		{"extra-argument"},
		{"-addresses", "rfc1918"},
		{"-addresses", "documentation", "-networks", "n.yml"},
		{"-networks", "/nonexistent/networks.yml"},
		{"-exporters", "/nonexistent/exporters.yml"},
		{"-output", "netflow5"},
		{"-output", "sflow", "-collector", "goflow2"},
		{"-collector", "127.0.0.1:2055"}, // with -output kafka
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code != 2 {
			t.Errorf("mocker %q exited %d, want 2; stderr:\n%s", args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"-networks", "/nonexistent/networks.yml"}, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "-networks") || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("mocker -networks /nonexistent/networks.yml exited %d; want 2 and a message naming the flag and the cause:\n%s", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"-h"}, &stderr); code != 0 || !strings.Contains(stderr.String(), "KAFKA_BROKERS") {
		t.Errorf("mocker -h exited %d; usage must list env vars:\n%s", code, stderr.String())
	}
}

// TestFlowsPerRecordFlag: -flows-per-record (or FLOWS_PER_RECORD) reaches
// the producer, and 0 is refused with a clear message rather than read as
// the library's default.
func TestFlowsPerRecordFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
	}{
		{args: []string{"-flows-per-record", "0"}},
		{env: "0"},
	} {
		if tc.env != "" {
			t.Setenv("FLOWS_PER_RECORD", tc.env)
		}
		var stderr bytes.Buffer
		code := run(append(tc.args, "-kafka.brokers", "127.0.0.1:1", "-metrics.addr", ""), &stderr)
		want := "mocker: -flows-per-record 0: want 1 to 1000 flows per Kafka record"
		if code != 2 || !strings.Contains(stderr.String(), want) {
			t.Errorf("args %q, FLOWS_PER_RECORD=%q: exit %d, want 2 saying %q; stderr:\n%s", tc.args, tc.env, code, want, stderr.String())
		}
	}

	brokers := testenv.FakeKafka(t, 3, "flows")
	t.Setenv("FLOWS_PER_RECORD", "3") // the flag wins
	var stderr bytes.Buffer
	if code := run([]string{"-kafka.brokers", brokers[0], "-count", "25", "-rate", "0",
		"-flows-per-record", "10", "-metrics.addr", "", "-progress.interval", "0"}, &stderr); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	recs := goflow2test.ReadTopic(t, brokers, "flows", time.Minute)
	var perRecord []int
	total := 0
	for _, r := range recs {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil {
			t.Fatalf("record %d@%d: %v", r.Offset, r.Partition, err)
		}
		perRecord = append(perRecord, len(flows))
		total += len(flows)
	}
	sort.Ints(perRecord)
	if total != 25 || len(perRecord) != 3 || perRecord[0] != 5 || perRecord[2] != 10 {
		t.Fatalf("%d flows in records of %v; want 25 in records of [5 10 10]", total, perRecord)
	}
}

func TestUnreachableKafka(t *testing.T) {
	bin := buildMocker(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-kafka.brokers", addr, "-kafka.connect-timeout", "3s", "-metrics.addr", "")
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"cannot reach Kafka at " + addr + " within 3s — is the broker running?", "(check -kafka.brokers)"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if elapsed > 8*time.Second {
		t.Fatalf("took %s to give up, want about 3s", elapsed)
	}
}

// TestDoneWhen runs the acceptance command against the real broker:
//
//	mocker -kafka.brokers HOST:PORT -kafka.topic flows -count 100000 -rate 0 -seed 7
func TestDoneWhen(t *testing.T) {
	k := testenv.SharedKafka(t)
	t.Logf("broker: %s at %s", k.Name(), k.Brokers()[0])
	k.CreateTopic(t, "flows", 3)
	bin := buildMocker(t)

	const n = 100_000
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", "flows",
		"-count", "100000", "-rate", "0", "-seed", "7", "-metrics.addr", "127.0.0.1:0")
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("mocker: %v\n%s", err, stderr.String())
	}
	t.Logf("mocker took %s; last log lines:\n%s", time.Since(start).Round(time.Millisecond), lastLines(stderr.String(), 2))

	recs := goflow2test.ReadTopic(t, k.Brokers(), "flows", 2*time.Minute)
	if len(recs) != n {
		t.Fatalf("topic holds %d records, want %d", len(recs), n)
	}
	// What the default (realistic, demo files) plan makes for seed 7.
	plan, err := mocker.DemoPlan()
	if err != nil {
		t.Fatal(err)
	}
	g := mocker.NewPlanGenerator(7, plan)
	var want struct{ v4, v6, rate0 int }
	wantPerExporter := map[netip.Addr]int{}
	var wantBytes uint64
	var m pb.FlowMessage
	for range n {
		g.Next(&m, time.Now())
		if m.Etype == 0x800 {
			want.v4++
		} else {
			want.v6++
		}
		if m.SamplingRate == 0 {
			want.rate0++
		}
		a, _ := netip.AddrFromSlice(m.SamplerAddress)
		wantPerExporter[a]++
		wantBytes += m.Bytes
	}

	var v4, v6, rate0 int
	perExporter := map[netip.Addr]int{}
	srcBytes := map[netip.Addr]uint64{}
	var total uint64
	for _, r := range recs {
		flows, err := goflow2test.Decode(r.Value)
		if err != nil || len(flows) != 1 {
			t.Fatalf("record %d@%d: %d flows, %v; want one goflow2 FlowMessage", r.Offset, r.Partition, len(flows), err)
		}
		f := flows[0]
		switch {
		case f.Etype == 0x800 && len(f.SrcAddr) == 4 && len(f.DstAddr) == 4:
			v4++
		case f.Etype == 0x86dd && len(f.SrcAddr) == 16 && len(f.DstAddr) == 16:
			v6++
		default:
			t.Fatalf("etype %#x with %d/%d-byte addresses", f.Etype, len(f.SrcAddr), len(f.DstAddr))
		}
		if f.Bytes == 0 || f.Packets == 0 {
			t.Fatalf("flow with bytes=%d packets=%d", f.Bytes, f.Packets)
		}
		// NetFlow v5 exporters send 0: the exporters file has their rate.
		if f.SamplingRate == 0 {
			rate0++
		}
		samp, _ := netip.AddrFromSlice(f.SamplerAddress)
		perExporter[samp]++
		a, _ := netip.AddrFromSlice(f.SrcAddr)
		srcBytes[a] += f.Bytes
		total += f.Bytes
	}
	if v4 != want.v4 || v6 != want.v6 || rate0 != want.rate0 || total != wantBytes {
		t.Fatalf("%d IPv4, %d IPv6 flows, %d with sampling rate 0, %d bytes; the generator made %d, %d, %d, %d",
			v4, v6, rate0, total, want.v4, want.v6, want.rate0, wantBytes)
	}
	if len(perExporter) != len(wantPerExporter) {
		t.Fatalf("flows per exporter %v, the generator made %v", perExporter, wantPerExporter)
	}
	for a, c := range wantPerExporter {
		if perExporter[a] != c {
			t.Fatalf("flows per exporter %v, the generator made %v", perExporter, wantPerExporter)
		}
	}
	if v4 == 0 || v6 == 0 || rate0 == 0 {
		t.Fatalf("%d IPv4, %d IPv6, %d rate-0 flows: want each kind", v4, v6, rate0)
	}
	var per []uint64
	for _, b := range srcBytes {
		per = append(per, b)
	}
	sort.Slice(per, func(i, j int) bool { return per[i] > per[j] })
	var top10 uint64
	for _, b := range per[:10] {
		top10 += b
	}
	share1, share10 := float64(per[0])/float64(total), float64(top10)/float64(total)
	t.Logf("%d IPv4, %d IPv6 flows; %d sources; top-1 carries %.1f%% of bytes, top-10 %.1f%%",
		v4, v6, len(per), 100*share1, 100*share10)
	if share10 <= 0.20 || share10 >= 0.90 || share1 >= 0.50 {
		t.Fatalf("top-10 share %.1f%%, top-1 %.1f%%: want skewed (20-90%%) but not one host (< 50%%)", 100*share10, 100*share1)
	}
}

// TestSignalStops: SIGTERM stops a run without -count cleanly: exit 0, a
// final total, and exactly that many records on the topic.
func TestSignalStops(t *testing.T) {
	k := testenv.SharedKafka(t)
	k.CreateTopic(t, "signal", 3)
	bin := buildMocker(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", "signal", "-rate", "2000",
		"-metrics.addr", "", "-log.format", "json")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	last := lastLines(stderr.String(), 1)
	if !strings.Contains(last, `"msg":"mocker stopped"`) {
		t.Fatalf("no final total in the log:\n%s", stderr.String())
	}
	recs := goflow2test.ReadTopic(t, k.Brokers(), "signal", time.Minute)
	if !strings.Contains(last, `"produced":`+strconv.Itoa(len(recs))+`,`) || len(recs) == 0 {
		t.Fatalf("topic holds %d records; final log line: %s", len(recs), last)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestSummaryFile: -output ipfix -collector … -summary FILE writes the
// contract's JSON at exit, with exactly the flows sent, and a collector
// received exactly the datagrams it counts.
func TestSummaryFile(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)
	received := make(chan int)
	go func() {
		n, buf := 0, make([]byte, 65536)
		for {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := conn.ReadFromUDP(buf); err != nil {
				received <- n
				return
			}
			n++
		}
	}()
	path := filepath.Join(t.TempDir(), "s.json")
	var stderr bytes.Buffer
	args := []string{"-output", "ipfix", "-collector", conn.LocalAddr().String(), "-count", "1000", "-rate", "20000",
		"-seed", "4", "-summary", path, "-metrics.addr", "", "-progress.interval", "0"}
	if code := run(args, &stderr); code != 0 {
		t.Fatalf("mocker %q exited %d:\n%s", args, code, stderr.String())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	if got := strings.Join(keys(raw), ","); got != "collector,ended,exporters,output,seed,started,totals" {
		t.Errorf("summary keys %s", got)
	}
	if got := strings.Join(keys(raw["totals"].(map[string]any)), ","); got != "bytes,datagrams,flows,packets,scaled_bytes,scaled_packets" {
		t.Errorf("totals keys %s", got)
	}
	exp := raw["exporters"].([]any)[0].(map[string]any)
	if got := strings.Join(keys(exp), ","); got != "address,bytes,datagrams,flows,name,packets,scaled_bytes,scaled_packets,type" {
		t.Errorf("exporter keys %s", got)
	}
	var s mocker.Summary
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	if s.Output != "ipfix" || s.Seed != 4 || s.Totals.Flows != 1000 || len(s.Exporters) != 4 ||
		s.Exporters[0].Address != "127.0.0.2" || s.Exporters[0].Name != "edge1.par1" || s.Exporters[0].Type != "IPFIX" {
		t.Fatalf("summary:\n%s", data)
	}
	if n := <-received; uint64(n) != s.Totals.Datagrams {
		t.Fatalf("the collector received %d datagrams, the summary says %d", n, s.Totals.Datagrams)
	}
}
