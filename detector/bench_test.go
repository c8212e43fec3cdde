package detector

import (
	"syscall"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// detectRecords are n records of the mocker's realistic flows with the
// enricher's names, one flow each.
func detectRecords(b *testing.B, n int) [][]byte {
	plan, err := mocker.DemoPlan()
	if err != nil {
		b.Fatal(err)
	}
	g := mocker.NewPlanGenerator(1, plan)
	recs := make([][]byte, n)
	var m pb.FlowMessage
	names := []string{"customer-a", "customer-b", "customer-c", ""}
	countries := []string{"US", "DE", "FR", "JP"}
	for i := range recs {
		g.Next(&m, t0)
		if m.SamplingRate == 0 {
			m.SamplingRate = 2000
		}
		m.DstNetName, m.SrcCountry, m.ExporterName = names[i%4], countries[i%3], "edge1.par1"
		if recs[i], err = pb.AppendDelimited(nil, &m); err != nil {
			b.Fatal(err)
		}
	}
	return recs
}

// BenchmarkEngineAdd is Engine.Add alone, on flows decoded beforehand:
// no allocation per flow.
func BenchmarkEngineAdd(b *testing.B) {
	recs := detectRecords(b, 1<<14)
	msgs := make([]pb.FlowMessage, len(recs))
	for i, r := range recs {
		if err := pb.UnmarshalRecord(r, &msgs[i], func(*pb.FlowMessage) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	th, err := ParseThresholds([]byte("networks: {customer-a: {pps: 100000000}}"))
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, testConfig(), th)
	base := uint64(t0.UnixNano())
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m := &msgs[i%len(msgs)]
		m.TimeReceivedNs = base + uint64(i)*uint64(time.Microsecond)
		e.Add(m, int32(i%6), wall)
		e.Alerts()
	}
}

// BenchmarkDetect is the detector's hot path per flow: decode a record
// (pb.UnmarshalRecord, one flow per record as goflow2 writes them) and
// count the flow (Engine.Add), with steps closing as event time advances
// at 1M flows/s. The flows are the mocker's realistic ones with the
// enricher's names. Run with -cpu 1: flows/s is per core.
func BenchmarkDetect(b *testing.B) {
	const n = 1 << 16
	recs := detectRecords(b, n)
	var m pb.FlowMessage
	th, err := ParseThresholds([]byte("networks: {customer-a: {pps: 100000000}}"))
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, testConfig(), th)
	base := uint64(t0.UnixNano())
	i := 0
	add := func(m *pb.FlowMessage) error {
		m.TimeReceivedNs = base + uint64(i)*uint64(time.Microsecond)
		e.Add(m, int32(i%6), wall)
		return nil
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for ; i < b.N; i++ {
		if err := pb.UnmarshalRecord(recs[i%n], &m, add); err != nil {
			b.Fatal(err)
		}
		e.Alerts()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	// The machine may be shared: flows per second of this process's CPU
	// time is the rate per core whatever else runs.
	b.ReportMetric(float64(b.N)/(cpuTime()-cpu0).Seconds(), "flows/cpu-s")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
