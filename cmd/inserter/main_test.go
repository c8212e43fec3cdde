package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// binary builds cmd/inserter once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	return testenv.BuildCommand(t, ".", "inserter")
}

type proc struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
	err  error
}

// startBinary runs the inserter binary with args; the test's cleanup kills
// it if still running.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "METRICS_ADDR=")
	p := &proc{cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, &lockedWriter{w: p.log}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("inserter pid %d log:\n%s", cmd.Process.Pid, tailLines(p.log.String(), 40))
		}
	})
	return p
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func tailLines(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func rows(t *testing.T, dsn string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := flowtest.Query(ctx, dsn)
	if err != nil {
		return -1
	}
	return d.Rows
}

func waitRowsAtLeast(t *testing.T, dsn string, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for rows(t, dsn) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d rows after %s (have %d)", n, timeout, rows(t, dsn))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDoneWhen is the acceptance run: the binary with exactly the
// documented flags stores what was produced, and SIGTERM exits 0.
func TestDoneWhen(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	want := produceMocker(t, k.Brokers(), topic, 11, 100_000)
	p := startBinary(t, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.group", "g", "-postgres.dsn", dsn)
	flowtest.WaitRows(t, dsn, want.Flows, 2*time.Minute)
	time.Sleep(time.Second) // anything more would be a duplicate
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		t.Fatal("no exit within 45s of SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", p.err)
	}
	flowtest.Check(t, dsn, want)
}

// produceMocker produces n flows of the mocker's generator, one per
// record like goflow2, and returns their totals.
func produceMocker(t *testing.T, brokers []string, topic string, seed int64, n int) flowtest.Totals {
	t.Helper()
	g := mocker.NewGenerator(seed)
	var m pb.FlowMessage
	var want flowtest.Totals
	values := make([][]byte, 0, n)
	now := time.Now().Add(-time.Hour)
	for i := range n {
		g.Next(&m, now.Add(time.Duration(i)*time.Microsecond))
		v, err := pb.AppendDelimited(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
		want.Flows++
		want.Bytes += int64(m.Bytes)
		want.Packets += int64(m.Packets)
	}
	flowtest.Produce(t, brokers, topic, values)
	return want
}

// TestSIGTERMCommitsWhatItConsumed stops the binary mid-stream: it exits 0
// and the database holds exactly the flows of the records its stored offset
// covers, no more, no less.
func TestSIGTERMCommitsWhatItConsumed(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 1)
	const n = 300_000
	base := time.Now().Add(-time.Hour)
	flowtest.ProduceFlows(t, k.Brokers(), topic, 12, n, 1, base)
	p := startBinary(t, "-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.group", "g", "-postgres.dsn", dsn, "-flush.count", "5000")
	waitRowsAtLeast(t, dsn, 20_000, time.Minute)
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", p.err)
	}
	d, err := flowtest.Query(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if d.StoredOffsets >= n {
		// Still worth checking (exit 0, exact totals), but say it.
		t.Logf("the inserter drained all %d flows before SIGTERM arrived", n)
	}
	// One flow per record on one partition: the first next_offset flows.
	g := flowtest.NewGen(12)
	var want flowtest.Totals
	var m pb.FlowMessage
	for i := range int(d.StoredOffsets) {
		g.Next(&m, base.Add(time.Duration(i)*10*time.Microsecond))
		want.Flows++
		want.Bytes += int64(m.Bytes)
		want.Packets += int64(m.Packets)
	}
	t.Logf("SIGTERM after %d of %d flows", want.Flows, n)
	flowtest.Check(t, dsn, want)
}

// TestSIGKILLRestarts kills the binary with SIGKILL several times while
// flows are still being produced, restarting it each time.
func TestSIGKILLRestarts(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 3)
	args := []string{"-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.group", "g", "-postgres.dsn", dsn, "-flush.count", "5000", "-flush.dur", "200ms"}
	stream := produceStream(t, k.Brokers(), topic, 20, 20_000, func(i int) int { return 1 + i%2 })
	p := startBinary(t, args...)
	for kill := 1; kill <= 3; kill++ {
		before := rows(t, dsn)
		waitRowsAtLeast(t, dsn, before+10_000, 2*time.Minute)
		p.kill(t)
		t.Logf("SIGKILL %d at %d rows, %d of 12 chunks produced", kill, rows(t, dsn), stream.chunks.Load())
		if kill == 1 && stream.chunks.Load() == 12 {
			t.Error("the first kill came after production ended: not mid-stream")
		}
		stream.Resume()
		p = startBinary(t, args...)
	}
	<-stream.done
	if t.Failed() {
		return
	}
	flowtest.WaitRows(t, dsn, stream.want.Flows, 2*time.Minute)
	time.Sleep(time.Second)
	flowtest.Check(t, dsn, stream.want)
	if !p.running() {
		t.Fatal("inserter exited on its own")
	}
}

// flowStream is 12 chunks of flows produced one second apart in the
// background, so the inserters under test meet a live stream, not a backlog.
// The second half waits for Resume, so a kill made before Resume always
// lands mid-stream, however slowly the inserters start.
type flowStream struct {
	done    chan struct{} // closed after the last chunk; want is final then
	resume  chan struct{}
	resumed sync.Once
	chunks  atomic.Int32
	want    flowtest.Totals
}

// Resume lets the second half of the chunks be produced.
func (s *flowStream) Resume() { s.resumed.Do(func() { close(s.resume) }) }

// produceStream starts a stream; chunk i uses seed seed+i, perChunk flows
// and flowsPerRecord(i) flows per Kafka record. The test's cleanup resumes
// it, so a failed test never leaves it waiting.
func produceStream(t *testing.T, brokers []string, topic string, seed int64, perChunk int, flowsPerRecord func(i int) int) *flowStream {
	s := &flowStream{done: make(chan struct{}), resume: make(chan struct{})}
	t.Cleanup(s.Resume)
	base := time.Now().Add(-time.Hour)
	go func() {
		defer close(s.done)
		for i := range 12 {
			if i == 6 {
				<-s.resume
			}
			tot := flowtest.ProduceFlows(t, brokers, topic, seed+int64(i), perChunk, flowsPerRecord(i), base.Add(time.Duration(i)*time.Minute))
			s.want.Flows += tot.Flows
			s.want.Bytes += tot.Bytes
			s.want.Packets += tot.Packets
			s.chunks.Add(1)
			time.Sleep(time.Second)
		}
	}()
	return s
}

// TestScaleOut runs 3 inserters in one group on a 6-partition topic and
// kills one mid-stream: the others take over its partitions and every
// flow is stored exactly once.
func TestScaleOut(t *testing.T) {
	k := testenv.SharedKafka(t)
	dsn := testenv.SharedPostgres(t).CreateDB(t, testenv.UniqueName(t))
	topic := testenv.UniqueName(t)
	k.CreateTopic(t, topic, 6)
	args := []string{"-kafka.brokers", k.Brokers()[0], "-kafka.topic", topic, "-kafka.group", "g", "-postgres.dsn", dsn, "-flush.count", "3000", "-flush.dur", "200ms"}
	stream := produceStream(t, k.Brokers(), topic, 40, 25_000, func(int) int { return 1 })
	var procs []*proc
	for range 3 {
		procs = append(procs, startBinary(t, args...))
	}
	waitRowsAtLeast(t, dsn, 60_000, 2*time.Minute)
	procs[1].kill(t)
	t.Logf("killed one of three inserters at %d rows, %d of 12 chunks produced", rows(t, dsn), stream.chunks.Load())
	if stream.chunks.Load() == 12 {
		t.Error("the kill came after production ended: not mid-stream")
	}
	stream.Resume()
	<-stream.done
	if t.Failed() {
		return
	}
	flowtest.WaitRows(t, dsn, stream.want.Flows, 3*time.Minute)
	time.Sleep(2 * time.Second)
	flowtest.Check(t, dsn, stream.want)
	for i, p := range procs {
		if i != 1 && !p.running() {
			t.Errorf("inserter %d exited on its own", i)
		}
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pass")
	os.WriteFile(file, []byte("s3cret\n"), 0o600)
	t.Setenv("POSTGRES_PASSWORD", "fromenv")
	cases := []struct {
		f    flags
		want string
	}{
		{flags{host: "db", port: 5432, user: "u", dbname: "d"}, "postgres://u:fromenv@db:5432/d"},
		{flags{host: "db", port: 5432, user: "u", dbname: "d", passFile: file}, "postgres://u:s3cret@db:5432/d"},
		{flags{host: "db", port: 5432, user: "u", dbname: "d", pass: "flag"}, "postgres://u:flag@db:5432/d"},
		{flags{dsn: "postgres://x@h/db?sslmode=disable", host: "ignored"}, "postgres://x:fromenv@h/db?sslmode=disable"},
		{flags{dsn: "host=h user=x"}, "host=h user=x"},
	}
	for _, c := range cases {
		got, err := c.f.postgresDSN()
		if err != nil || got != c.want {
			t.Errorf("%+v: got %q, %v; want %q", c.f, got, err, c.want)
		}
	}
}
