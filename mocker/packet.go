package mocker

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/mocker/flowexport"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// The outputs Config.Output names: Kafka, like goflow2 -format=bin, or the
// datagrams of a router protocol to a collector.
const (
	OutputKafka     = "kafka"
	OutputNetFlowV9 = flowexport.NetFlowV9
	OutputIPFIX     = flowexport.IPFIX
	OutputSFlow     = flowexport.SFlow
)

// DefaultCollector is the collector a router protocol goes to when
// Config.Collector is empty: goflow2's default ports.
func DefaultCollector(output string) string {
	if output == OutputSFlow {
		return "127.0.0.1:6343"
	}
	return "127.0.0.1:2055"
}

const (
	// templatesWarmup is the pause after the templates datagrams at start:
	// goflow2 decodes datagrams on several workers, so data sent right
	// behind its templates could be decoded first and dropped.
	templatesWarmup = 100 * time.Millisecond
	// maxDatagramDelay bounds how long a flow waits in a datagram that is
	// not full (exporters flush on a timer too).
	maxDatagramDelay = 100 * time.Millisecond
	// earlySend is how far ahead of its due time the pacing lets a flow
	// go, so that it sleeps once a millisecond rather than once a flow.
	earlySend = time.Millisecond
	// maxCatchUp is how far behind its schedule the sender may fall (when
	// it was descheduled) and still catch up by sending faster; beyond, it
	// restarts the schedule. Routers do not burst: a second of flows sent
	// at once would overflow the collector's socket buffer.
	maxCatchUp = 20 * time.Millisecond
)

// packetExporter is one simulated router: its socket, encoder and counts.
type packetExporter struct {
	conn    *net.UDPConn
	enc     flowexport.Encoder
	rate    uint64
	truth   *truthExporter
	pending Counts    // flows in the datagram being built
	first   time.Time // when its first flow was added
	buf     []byte
}

// sourceAddress is where exporter i sends from when the collector is on
// loopback: 127.0.0.2, 127.0.0.3, … (Linux answers for all of 127/8).
func sourceAddress(i int) (netip.Addr, bool) {
	if i > 252 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}), true
}

// dialExporters opens one socket per exporter, each from its own address
// when the collector is on loopback and the OS allows it; otherwise from
// the address the OS picks (all exporters then share it and are told apart
// by source port and observation domain / source ID).
func (m *Mocker) dialExporters(raddr *net.UDPAddr, n int) ([]*net.UDPConn, error) {
	conns := make([]*net.UDPConn, 0, n)
	fail := func(err error) ([]*net.UDPConn, error) {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	var bindErr error
	if !raddr.IP.IsLoopback() || raddr.IP.To4() == nil {
		m.logger.Info("the collector is not on IPv4 loopback: all exporters send from the address the OS picks, told apart by source port and observation domain",
			"collector", raddr.String())
	}
	for i := range n {
		var conn *net.UDPConn
		if src, ok := sourceAddress(i); ok && raddr.IP.IsLoopback() && raddr.IP.To4() != nil && bindErr == nil {
			var err error
			conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, raddr)
			if err != nil {
				bindErr = err
				m.logger.Warn("cannot send from a loopback address of its own per exporter; all exporters send from one address, told apart by source port and observation domain",
					"address", src, "error", err)
			}
		}
		if conn == nil {
			var err error
			if conn, err = net.DialUDP("udp", nil, raddr); err != nil {
				return fail(fmt.Errorf("cannot open a UDP socket to the collector %s: %w (check Config.Collector)", raddr, err))
			}
		}
		conns = append(conns, conn)
	}
	return conns, nil
}

// runPackets is Run for the router protocols: flows paced at Rate into
// one encoder per exporter, each datagram sent from that exporter's socket.
func (m *Mocker) runPackets(ctx context.Context) error {
	cfg := &m.cfg
	collector := cfg.Collector
	if collector == "" {
		collector = DefaultCollector(cfg.Output)
	}
	raddr, err := net.ResolveUDPAddr("udp", collector)
	if err != nil {
		return fmt.Errorf("cannot resolve the collector %q: %w (check Config.Collector)", collector, err)
	}
	gen := m.newGenerator()
	infos := exporterInfos(gen, m.plan)
	conns, err := m.dialExporters(raddr, len(infos))
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	start := time.Now()
	flowType := flowexport.Type(cfg.Output).String()
	exps := make([]*packetExporter, len(infos))
	list := make([]*truthExporter, len(infos))
	for i, info := range infos {
		local := conns[i].LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		e := flowexport.Exporter{
			// sFlow carries the router's own address, whatever the socket's:
			// the exporters file's, so the enricher finds it.
			Agent:        netip.AddrFrom4(info.addr),
			Domain:       uint32(i + 1),
			SamplingRate: uint32(min(info.planRate, math.MaxUint32)),
			// Routers that booted days apart: uptimes differ, and stay
			// under the 49.7 days of a 32-bit millisecond counter.
			Boot: start.Add(-time.Duration(1+(uint64(cfg.Seed)+uint64(i)*7)%40)*24*time.Hour - time.Duration(i)*37*time.Minute),
		}
		enc, err := flowexport.New(cfg.Output, e)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		addr := local
		if cfg.Output == OutputSFlow {
			addr = e.Agent
		}
		list[i] = &truthExporter{address: addr.String(), name: info.name, typ: flowType}
		exps[i] = &packetExporter{conn: conns[i], enc: enc, rate: info.planRate, truth: list[i]}
	}
	m.truth.begin(list, raddr.String())
	m.ready.Store(true)
	defer m.ready.Store(false)
	addrs := make([]string, len(list))
	for i, e := range list {
		addrs[i] = e.address
	}
	m.logger.Info("sending flows", "output", cfg.Output, "collector", raddr.String(), "exporters", strings.Join(addrs, ","),
		"rate", cfg.Rate, "count", cfg.Count, "seed", cfg.Seed)

	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if cfg.ProgressInterval > 0 {
		progressWG.Add(1)
		go func() { defer progressWG.Done(); m.progress(progressDone) }()
	}
	defer progressWG.Wait()
	defer close(progressDone)

	now := time.Now()
	for _, e := range exps {
		if d := e.enc.Templates(e.buf[:0], now); len(d) > 0 {
			e.write(m, d, Counts{Datagrams: 1})
		}
	}
	if cfg.Output != OutputSFlow {
		select {
		case <-time.After(templatesWarmup):
		case <-ctx.Done():
			return nil
		}
	}

	m.sendPackets(ctx, gen, infos, exps)
	now = time.Now()
	for _, e := range exps {
		e.flush(m, now)
	}
	m.logger.Info("mocker stopped", "sent", m.produced.Load(), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// sendPackets generates and sends flows until Count or ctx ends.
func (m *Mocker) sendPackets(ctx context.Context, gen *Generator, infos []exporterInfo, exps []*packetExporter) {
	cfg := &m.cfg
	var flow pb.FlowMessage
	var timer *time.Timer
	start := time.Now()
	lastCheck := start
	var scheduled uint64
	for cfg.Count == 0 || scheduled < cfg.Count {
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		if cfg.Rate > 0 {
			due := start.Add(time.Duration(float64(scheduled) / cfg.Rate * float64(time.Second)))
			if wait := due.Sub(now); wait > earlySend {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
				now = time.Now()
			} else if wait < -maxCatchUp {
				// Far behind: restart the schedule rather than burst.
				start = now.Add(-time.Duration(float64(scheduled) / cfg.Rate * float64(time.Second)))
			}
		}
		if now.Sub(lastCheck) >= maxDatagramDelay/10 {
			lastCheck = now
			for _, e := range exps {
				if e.enc.Flows() > 0 && now.Sub(e.first) >= maxDatagramDelay {
					e.flush(m, now)
				}
			}
		}
		gen.Next(&flow, now)
		e := exps[max(exporterIndex(infos, flow.SamplerAddress), 0)]
		c, ok := e.enc.Add(&flow, now)
		if !ok {
			e.flush(m, now)
			c, _ = e.enc.Add(&flow, now) // a flow alone always fits
		}
		if e.pending.Flows == 0 {
			e.first = now
		}
		e.pending.addFlow(c.Bytes, c.Packets, e.rate)
		scheduled++
		m.sent.Add(1)
	}
}

// flush sends the datagram being built, if any.
func (e *packetExporter) flush(m *Mocker, now time.Time) {
	if e.enc.Flows() == 0 {
		return
	}
	e.buf = e.enc.Flush(e.buf[:0], now)
	c := e.pending
	c.Datagrams = 1
	e.pending = Counts{}
	e.write(m, e.buf, c)
}

// write sends one datagram and counts its flows as sent, or as failed.
func (e *packetExporter) write(m *Mocker, d []byte, c Counts) {
	if _, err := e.conn.Write(d); err != nil {
		m.metrics.failed.WithLabelValues(failureReason(err)).Add(float64(c.Flows))
		// One log line per second at most, not one per datagram.
		if now := time.Now().UnixNano(); now-m.lastSendErr.Load() > int64(time.Second) {
			m.lastSendErr.Store(now)
			m.logger.Warn("datagram not sent (is the collector listening?); its flows are lost and counted in flowpipeline_mocker_flows_failed_total",
				"flows", c.Flows, "error", err)
		}
		return
	}
	e.truth.add(c)
	m.produced.Add(c.Flows)
}

// newGenerator is the generator of the configured address plan.
func (m *Mocker) newGenerator() *Generator {
	if m.plan != nil {
		return NewPlanGenerator(m.cfg.Seed, m.plan)
	}
	return NewGenerator(m.cfg.Seed)
}

// validateOutput checks Output and Collector.
func (c Config) validateOutput() []error {
	switch c.Output {
	case OutputKafka:
		if c.Collector != "" {
			return []error{fmt.Errorf("Config.Collector %q is for the router protocols; with Output %s, leave it empty", c.Collector, OutputKafka)}
		}
	case OutputNetFlowV9, OutputIPFIX, OutputSFlow:
		if c.Collector != "" {
			if _, _, err := net.SplitHostPort(c.Collector); err != nil {
				return []error{fmt.Errorf("Config.Collector %q: want host:port, e.g. %s: %w", c.Collector, DefaultCollector(c.Output), err)}
			}
		}
	default:
		return []error{fmt.Errorf("Config.Output %q: want %s, %s, %s or %s", c.Output, OutputKafka, OutputNetFlowV9, OutputIPFIX, OutputSFlow)}
	}
	return nil
}
