package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	iproc "github.com/spendletonliveaction/flow-pipeline/internal/proc"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// waitExit waits for the binary to exit on its own and returns its exit
// status.
func (p *proc) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("the inserter still runs after %s; want it to exit at start", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

func (p *proc) sigterm(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		t.Fatal("no exit within 45s of SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", p.err)
	}
}

// TestSecondGroupRefused starts a second consumer group on a database that
// holds the first group's offsets: it exits 1 naming the first group and
// the flag; with the flag it starts, and (as the message warns) stores
// every flow a second time.
func TestSecondGroupRefused(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 2)
	values, want := flowtest.Records(91, 1000, 1, time.Now().Add(-time.Hour))
	flowtest.Produce(t, k.Brokers(), topic, values)
	args := []string{"-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-postgres.dsn", dsn, "-flush.dur", "100ms"}

	first := startBinary(t, append(args, "-kafka.group", "first")...)
	flowtest.WaitRows(t, dsn, want.Flows, time.Minute)
	first.sigterm(t)

	second := startBinary(t, append(args, "-kafka.group", "second")...)
	if code := second.waitExit(t, time.Minute); code != 1 {
		t.Fatalf("second group: exit status %d, want 1\n%s", code, second.log)
	}
	msg := second.log.String()
	for _, s := range []string{`consumer group(s) "first"`, `group is "second"`, "-kafka.group.allow-shared-db"} {
		if !strings.Contains(msg, s) {
			t.Errorf("the refusal does not say %q:\n%s", s, tailLines(msg, 10))
		}
	}
	if got := rows(t, dsn); got != want.Flows {
		t.Fatalf("%d rows after the refused start, want %d", got, want.Flows)
	}

	allowed := startBinary(t, append(args, "-kafka.group", "second", "-kafka.group.allow-shared-db")...)
	flowtest.WaitRows(t, dsn, 2*want.Flows, time.Minute)
	time.Sleep(time.Second)
	allowed.sigterm(t)
	if got := rows(t, dsn); got != 2*want.Flows {
		t.Errorf("%d rows with two groups, want %d (each group stores every flow)", got, 2*want.Flows)
	}
}

// TestMissingDeadLetterTopicExits: a -kafka.dlq that does not exist stops
// the binary at start with status 1 and says so.
func TestMissingDeadLetterTopicExits(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 1)
	p := startBinary(t, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.dlq", "flows-dlq-missing", "-postgres.dsn", dsn)
	if code := p.waitExit(t, time.Minute); code != 1 {
		t.Fatalf("exit status %d, want 1\n%s", code, p.log)
	}
	if msg := p.log.String(); !strings.Contains(msg, `dead-letter topic "flows-dlq-missing" (-kafka.dlq) does not exist`) {
		t.Errorf("the error does not name the missing topic:\n%s", tailLines(msg, 10))
	}
}

// compressibleJunk returns n record values of size bytes: a valid flow
// frame followed by runs of random bytes (64 to 1023 long), which zstd
// compresses about 100 times. Each is rejected whole: the runs do not
// parse as flows.
func compressibleJunk(seed uint64, n, size int, frame []byte) [][]byte {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([][]byte, n)
	for k := range out {
		v := make([]byte, size)
		i := copy(v, frame)
		for i < len(v) {
			run := 64 + r.IntN(960)
			b := byte(r.IntN(256))
			for j := 0; j < run && i < len(v); j++ {
				v[i] = b
				i++
			}
		}
		out[k] = v
	}
	return out
}

// produceCompressed produces values with zstd, batches of up to 1 MB
// before compression, round-robin over the partitions.
func produceCompressed(t *testing.T, brokers []string, topic string, values [][]byte) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.ProducerBatchMaxBytes(1_000_000),
		kgo.ProducerLinger(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < len(values); i += 1000 {
		var recs []*kgo.Record
		for _, v := range values[i:min(i+1000, len(values))] {
			recs = append(recs, &kgo.Record{Topic: topic, Value: v})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
	}
}

// vmHWM is the peak resident set of pid in bytes (/proc/PID/status).
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// scrape sums every series of a metric from the binary's /metrics.
func scrape(t *testing.T, addr, name string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if line == name || strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			sum += v
		}
	}
	return int64(sum)
}

// TestMemoryBoundCompressed feeds the binary a backlog of 256 MiB of
// zstd-compressed records (about 2.4 MiB on the broker, 100 times smaller)
// on 3 partitions: its peak RSS stays under 200 MB, and every record is
// accounted for: stored or rejected. The backlog is larger than the bound
// so that a consumer holding it all (the former 1 MB fetches and 256
// buffered records per partition) fails.
func TestMemoryBoundCompressed(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	good, want := flowtest.Records(95, 10_000, 1, time.Now().Add(-time.Hour))
	const junkSize, junkCount = 64 << 10, 4096 // 256 MiB
	junk := compressibleJunk(95, junkCount, junkSize, good[0])
	var values [][]byte
	j := 0
	for i, v := range good {
		values = append(values, v)
		for ; j < (i+1)*len(junk)/len(good); j++ {
			values = append(values, junk[j])
		}
	}
	produceCompressed(t, k.Brokers(), topic, values)
	if onDisk := topicBytes(t, k.Brokers(), topic); onDisk > 0 {
		t.Logf("%d records, %d MiB of values, %.1f MiB on the broker", len(values), (junkSize*junkCount)>>20, float64(onDisk)/(1<<20))
	}

	port, err := iproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := startBinary(t, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.group", "g", "-postgres.dsn", dsn,
		"-metrics.addr", addr)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := flowtest.Query(ctx, dsn)
		cancel()
		if err == nil && d.StoredOffsets == int64(len(values)) {
			break
		}
		if !p.running() || time.Now().After(deadline) {
			t.Fatalf("the inserter consumed %d of %d records (running: %v, last error: %v)", d.StoredOffsets, len(values), p.running(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	peak := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("peak RSS (VmHWM) %.1f MiB", float64(peak)/(1<<20))
	if peak >= 200<<20 {
		t.Errorf("peak RSS %.1f MiB, want under 200 MiB", float64(peak)/(1<<20))
	}
	flowtest.Check(t, dsn, want)
	if got := scrape(t, addr, "flowpipeline_inserter_records_invalid_total"); got != junkCount {
		t.Errorf("records_invalid_total %d, want %d", got, junkCount)
	}
	if got := scrape(t, addr, "flowpipeline_inserter_flows_stored_total"); got != want.Flows {
		t.Errorf("flows_stored_total %d, want %d", got, want.Flows)
	}
	if got := scrape(t, addr, "flowpipeline_inserter_records_consumed_total"); got != int64(len(values)) {
		t.Errorf("records_consumed_total %d, want %d (stored %d + rejected %d)", got, len(values), want.Flows, junkCount)
	}
	p.sigterm(t)
}

// topicBytes is the size of topic's log on the broker, or 0 if unknown.
func topicBytes(t *testing.T, brokers []string, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0
	}
	defer cl.Close()
	dirs, err := kadm.NewClient(cl).DescribeAllLogDirs(context.Background(), nil)
	if err != nil {
		return 0
	}
	var n int64
	dirs.Each(func(d kadm.DescribedLogDir) {
		d.Topics.Each(func(p kadm.DescribedLogDirPartition) {
			if p.Topic == topic {
				n += p.Size
			}
		})
	})
	return n
}
