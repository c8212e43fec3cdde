package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// binary builds cmd/enricher once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	return testenv.BuildCommand(t, ".", "enricher")
}

type proc struct {
	cmd  *exec.Cmd
	log  *lockedWriter
	done chan struct{}
	err  error
}

// startBinary runs the enricher binary with args; the test's cleanup kills
// it if still running.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "METRICS_ADDR=")
	p := &proc{cmd: cmd, log: &lockedWriter{w: &bytes.Buffer{}}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
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
			t.Logf("enricher pid %d log:\n%s", cmd.Process.Pid, tailLines(p.log.String(), 30))
		}
	})
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// term stops the binary with SIGTERM and fails unless it exits 0.
func (p *proc) term(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		t.Fatal("no exit within 45s of SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", p.err, tailLines(p.log.String(), 30))
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

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func tailLines(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// flowKey identifies a flow: the generators number each exporter's flows.
type flowKey struct {
	sampler string
	seq     uint32
}

// seen is what a read_committed reader of the output topic saw.
type seen struct {
	tot        flowtest.Totals
	dups       int
	keys       map[flowKey]struct{}
	badRecords int
	frames     map[flowKey][]byte // raw output frames, only when keep
}

// readCommitted reads topic from the start with read_committed until it
// has seen want flows, then 2 s more (anything more is a duplicate), or
// fails after timeout.
func readCommitted(t *testing.T, brokers []string, topic string, want int64, timeout time.Duration, keep bool) seen {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s := seen{keys: map[flowKey]struct{}{}, frames: map[flowKey][]byte{}}
	var m pb.FlowMessage
	deadline := time.Now().Add(timeout)
	var extra time.Time
	for {
		now := time.Now()
		if !extra.IsZero() && now.After(extra) {
			return s
		}
		if now.After(deadline) {
			t.Fatalf("after %s a read_committed reader of %s saw %d flows, want %d", timeout, topic, s.tot.Flows, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			err := pb.ForEachFrame(r.Value, func(f []byte) error {
				if err := m.DecodeWire(f); err != nil {
					return err
				}
				k := flowKey{string(m.SamplerAddress), m.SequenceNum}
				if _, dup := s.keys[k]; dup {
					s.dups++
				}
				s.keys[k] = struct{}{}
				s.tot.Flows++
				s.tot.Bytes += int64(m.Bytes)
				s.tot.Packets += int64(m.Packets)
				if keep {
					s.frames[k] = append([]byte(nil), f...)
				}
				return nil
			})
			if err != nil {
				s.badRecords++
			}
		})
		if extra.IsZero() && s.tot.Flows >= want {
			extra = time.Now().Add(2 * time.Second)
		}
	}
}

// check fails unless s is exactly want, each flow once.
func check(t *testing.T, s seen, want flowtest.Totals) {
	t.Helper()
	if s.tot != want {
		t.Errorf("read_committed output: %v; want %v", s.tot, want)
	}
	if s.dups != 0 || int64(len(s.keys)) != want.Flows {
		t.Errorf("%d duplicate (sampler_address, sequence_num) pairs, %d distinct, want 0 and %d", s.dups, len(s.keys), want.Flows)
	}
	if s.badRecords != 0 {
		t.Errorf("%d output records do not decode", s.badRecords)
	}
}

// produceSlowly produces n flows in chunks of chunk flows, perRecord
// flows a record, pausing between chunks, so the enricher works while
// flows keep arriving. It returns the totals once all are produced.
func produceSlowly(t *testing.T, brokers []string, topic string, n, chunk, perRecord int, pause time.Duration) flowtest.Totals {
	var tot flowtest.Totals
	base := time.Now().Add(-time.Hour)
	for i := 0; i*chunk < n; i++ {
		values, tt := flowtest.Records(int64(i+1), min(chunk, n-i*chunk), perRecord, base)
		flowtest.Produce(t, brokers, topic, values)
		tot.Flows += tt.Flows
		tot.Bytes += tt.Bytes
		tot.Packets += tt.Packets
		time.Sleep(pause)
	}
	return tot
}

func kafkaArgs(brokers []string, in, out, group, id string) []string {
	return []string{"-kafka.brokers", brokers[0], "-kafka.topic", in, "-kafka.out.topic", out,
		"-kafka.group", group, "-kafka.transactional.id", id, "-kafka.session.timeout", "6s",
		"-kafka.transaction.interval", "200ms", "-metrics.addr", ""}
}

// TestSIGKILLExactlyOnce kills the enricher three times while 200,000
// flows pass; restarted each time, it leaves every flow exactly once in
// the output as a read_committed reader sees it.
func TestSIGKILLExactlyOnce(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := testenv.UniqueName(t), testenv.UniqueName(t)
	k.CreateTopic(t, in, 3)
	k.CreateTopic(t, out, 3)
	const n = 200_000
	wantCh := make(chan flowtest.Totals, 1)
	go func() { wantCh <- produceSlowly(t, k.Brokers(), in, n, 10_000, 10, 400*time.Millisecond) }()
	args := kafkaArgs(k.Brokers(), in, out, "g", "enricher-kill")
	for i := range 3 {
		p := startBinary(t, args...)
		time.Sleep(time.Duration(2500+700*i) * time.Millisecond)
		if !func() bool {
			select {
			case <-p.done:
				return false
			default:
				return true
			}
		}() {
			t.Fatalf("enricher exited before kill %d: %v\n%s", i+1, p.err, tailLines(p.log.String(), 30))
		}
		p.kill()
	}
	p := startBinary(t, args...)
	want := <-wantCh
	s := readCommitted(t, k.Brokers(), out, want.Flows, 90*time.Second, false)
	p.term(t)
	check(t, s, want)
	t.Logf("%v after 3 SIGKILLs, each exactly once", s.tot)
}

// TestRebalanceExactlyOnce runs two enrichers on 6 partitions, stops one
// and starts a third mid-stream, then restarts the stopped one: the
// output holds every flow exactly once.
func TestRebalanceExactlyOnce(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := testenv.UniqueName(t), testenv.UniqueName(t)
	k.CreateTopic(t, in, 6)
	k.CreateTopic(t, out, 6)
	const n = 120_000
	wantCh := make(chan flowtest.Totals, 1)
	go func() { wantCh <- produceSlowly(t, k.Brokers(), in, n, 6_000, 5, 400*time.Millisecond) }()
	id := func(i int) []string { return kafkaArgs(k.Brokers(), in, out, "g", "enricher-"+strconv.Itoa(i)) }
	a, b := startBinary(t, id(1)...), startBinary(t, id(2)...)
	time.Sleep(3 * time.Second)
	b.kill() // its partitions move once its session expires
	c := startBinary(t, id(3)...)
	time.Sleep(3 * time.Second)
	b = startBinary(t, id(2)...)
	want := <-wantCh
	s := readCommitted(t, k.Brokers(), out, want.Flows, 90*time.Second, false)
	for _, p := range []*proc{a, b, c} {
		p.term(t)
	}
	check(t, s, want)
	t.Logf("%v across rebalances, each exactly once", s.tot)
}
