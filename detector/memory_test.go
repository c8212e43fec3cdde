package detector

import (
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestMemoryBound10M: 10 million distinct destinations pass in 20 s of
// event time (500k flows/s; one flow in 100 heavy enough to be tracked,
// so the target table churns), beside a DNS amplification attack on one
// address, through the live engine and the detector's copy of the state
// at each commit. The heap in use, sampled every 2 ms, stays under
// 300 MB, and the attack is still found: one start.
func TestMemoryBound10M(t *testing.T) {
	const (
		distinct = 10_000_000
		perSec   = distinct / 20
		limit    = 300 << 20
	)
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	th := DefaultThresholds()
	e, snap := newTestEngine(t, testConfig(), th), newTestEngine(t, testConfig(), th)
	flood := &pb.FlowMessage{Proto: 17, SrcPort: 40000, DstPort: 80, SamplingRate: 1000, Packets: 1, Bytes: 60,
		SrcAddr: []byte{198, 18, 0, 1}, DstAddr: make([]byte, 4)}
	dns := dnsFlow("203.0.113.7", 2*th.Addr[VectorDNS].Pps/1000).msg()
	var starts []Alert
	for i := range distinct {
		at := t0.Add(time.Duration(i) * time.Second / perSec)
		// Distinct addresses: a bijection of the counter over 32 bits.
		binary.BigEndian.PutUint32(flood.DstAddr, uint32(i)*2654435761)
		flood.TimeReceivedNs = uint64(at.UnixNano())
		flood.Packets = 1
		if i%100 == 0 {
			flood.Packets = 4000
		}
		e.Add(flood, int32(i%6), wall)
		if i%(perSec/10) == 0 {
			dns.TimeReceivedNs = flood.TimeReceivedNs
			e.Add(dns, int32(i%6), wall)
		}
		if i%perSec == perSec-1 {
			e.copyTo(snap) // a commit
		}
		for _, a := range e.Alerts() {
			if a.Event == EventStart {
				starts = append(starts, a)
			}
		}
	}
	close(stop)
	wg.Wait()
	c := e.Take()
	p := peak.Load()
	t.Logf("peak heap in use %.1f MB; process peak RSS %s; %d targets evicted, %d refused", float64(p)/(1<<20), hwm(), c.Evictions, c.TargetsFull)
	if p >= limit {
		t.Errorf("peak heap in use %d bytes, want under %d", p, limit)
	}
	if c.Flows != distinct+200 {
		t.Errorf("%d flows counted, want %d", c.Flows, distinct+200)
	}
	if len(starts) != 1 || starts[0].Target != "203.0.113.7" || starts[0].Vector != "dns-amp" {
		t.Errorf("starts %v, want one dns-amp on 203.0.113.7", briefs(t, starts))
	}
}

// hwm is the process's peak resident set (VmHWM), for the log.
func hwm() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "unknown"
}
