package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/detector"
	iproc "github.com/spendletonliveaction/flow-pipeline/internal/proc"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBadFlags: bad flags exit 2 naming the flag, never a Config field; a
// thresholds file that does not load at start exits 1 naming the file.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-kafka.alerts.topic", "flows-enriched"}, "-kafka.alerts.topic must differ from -kafka.topic"},
		{[]string{"-kafka.brokers", "nohost"}, `-kafka.brokers: "nohost" is not host:port`},
		{[]string{"-detect.window", "1500ms"}, "-detect.window 1.5s must be a positive multiple of -detect.step 1s"},
		{[]string{"-detect.hysteresis", "1.5"}, "-detect.hysteresis 1.5 must be in (0, 1]"},
		{[]string{"-detect.targets", "1"}, "-detect.targets 1 must be between 16 and 1048576"},
		{[]string{"-webhook", "ftp://x"}, `-webhook "ftp://x" is not an http:// or https:// URL`},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out); code != 2 || !strings.Contains(out.String(), tc.want) || strings.Contains(out.String(), "Config.") {
			t.Errorf("%q: exit %d, output %q; want 2 and %q", tc.args, code, out.String(), tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "t.yml")
	if err := os.WriteFile(bad, []byte("vectors: {smurf: {pps: 1}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := run([]string{"-thresholds", bad, "-metrics.addr", ""}, &out); code != 1 || !strings.Contains(out.String(), bad) || !strings.Contains(out.String(), `unknown vector "smurf"`) {
		t.Errorf("bad thresholds file: exit %d, %q; want 1 naming the file and the vector", code, out.String())
	}
}

// binary builds cmd/detector once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	return testenv.BuildCommand(t, ".", "detector")
}

// TestBinary, on the real broker: the binary gets ready, finds a DNS
// amplification in the flows of a 3-partition topic, writes its start and
// end once each to the alerts topic, counts them in /metrics, reloads
// its thresholds on SIGHUP and exits 0 on SIGTERM.
func TestBinary(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := testenv.UniqueName(t), testenv.UniqueName(t)+"-alerts"
	k.CreateTopic(t, in, 3)
	k.CreateTopic(t, out, 3)
	th := detector.DefaultThresholds()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	var values [][]byte
	for i := range 40 * 20 { // 40 s, 20 flows/s: 10 of the attack (first 20 s), 10 of background
		m := &pb.FlowMessage{TimeReceivedNs: uint64(t0.Add(time.Duration(i) * time.Second / 20).UnixNano()),
			SamplingRate: 100, Proto: 6, TcpFlags: 0x18, Packets: 1, Bytes: 100,
			SrcAddr: netip.MustParseAddr("192.0.2.9").AsSlice(), DstAddr: netip.MustParseAddr("198.51.100.1").AsSlice()}
		if i%2 == 0 && i < 20*20 {
			m.Proto, m.SrcPort, m.TcpFlags = 17, 53, 0
			m.Packets = 2 * th.Addr[detector.VectorDNS].Pps / 1000
			m.DstAddr, m.DstNetName = netip.MustParseAddr("203.0.113.7").AsSlice(), "customer-c"
		}
		v, err := pb.AppendDelimited(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	flowtest.Produce(t, k.Brokers(), in, values)

	thFile := filepath.Join(t.TempDir(), "thresholds.yml")
	if err := os.WriteFile(thFile, []byte("vectors: {udp-flood: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := iproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(binary(t), "-kafka.brokers", strings.Join(k.Brokers(), ","), "-kafka.topic", in, "-kafka.alerts.topic", out,
		"-kafka.group", in, "-kafka.transactional.id", in, "-kafka.transaction.interval", "200ms", "-detect.idle", "1s",
		"-thresholds", thFile, "-thresholds.poll", "0", "-metrics.addr", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("detector log:\n%s", log.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("/readyz", func() bool { code, _ := get("/readyz"); return code == 200 })
	var probe bytes.Buffer
	if code := run([]string{"-probe", base + "/readyz"}, &probe); code != 0 {
		t.Errorf("-probe: exit %d, %s", code, probe.String())
	}

	// The alerts, read_committed: one start and one end for the attack.
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.ConsumeTopics(out),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	events := map[string]int{}
	waitFor("the end alert", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var a detector.Alert
			if err := json.Unmarshal(r.Value, &a); err != nil || a.Target != "203.0.113.7" || a.Vector != "dns-amp" || string(r.Key) != a.Target {
				t.Errorf("unexpected alert %s (key %s): %v", r.Value, r.Key, err)
			}
			events[a.Event]++
		})
		return events["end"] > 0
	})
	time.Sleep(time.Second) // nothing more must come
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { t.Errorf("alert after the end: %s", r.Value) })
	cancel()
	if events["start"] != 1 || events["end"] != 1 || events["update"] != 5 {
		t.Errorf("events %v, want 1 start, 5 updates, 1 end", events)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		`flowpipeline_detector_alerts_total{event="start",vector="dns-amp"} 1`,
		`flowpipeline_detector_alerts_total{event="end",vector="dns-amp"} 1`,
		`flowpipeline_detector_flows_in_total 800`,
		`flowpipeline_detector_reloads_total{result="ok"} 1`,
		`flowpipeline_detector_detection_delay_seconds_count 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// SIGHUP reloads the file.
	if err := os.WriteFile(thFile, []byte("vectors: {smurf: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the reload counted", func() bool {
		_, m := get("/metrics")
		return strings.Contains(m, `flowpipeline_detector_reloads_total{result="error"} 1`)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		if exitErr != nil {
			t.Errorf("exit after SIGTERM: %v, want 0", exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
}
