package mocker

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// Summary is what a run sent, per exporter: the truth a test or a load
// test compares the store with. Config.Output "kafka" counts flows Kafka
// acknowledged; the router protocols count flows in datagrams the socket
// accepted (what the collector drops is not subtracted: that is what the
// comparison finds).
type Summary struct {
	Output    string            `json:"output"`
	Collector string            `json:"collector"` // host:port; empty for kafka
	Seed      int64             `json:"seed"`
	Started   time.Time         `json:"started"`
	Ended     time.Time         `json:"ended"`
	Totals    Counts            `json:"totals"`
	Exporters []ExporterSummary `json:"exporters"`
	// Attacks is what each -attack injected, and when (kafka output only).
	Attacks []AttackSummary `json:"attacks,omitempty"`
}

// Counts are one exporter's (or all exporters') sent flows. Bytes and
// Packets are sampled counts as the collector stores them; the Scaled ones
// are multiplied by the sampling rate the store applies (0 counts as 1).
// Datagrams is 0 for kafka.
type Counts struct {
	Flows         uint64 `json:"flows"`
	Bytes         uint64 `json:"bytes"`
	Packets       uint64 `json:"packets"`
	ScaledBytes   uint64 `json:"scaled_bytes"`
	ScaledPackets uint64 `json:"scaled_packets"`
	Datagrams     uint64 `json:"datagrams"`
}

func (c *Counts) add(o Counts) {
	c.Flows += o.Flows
	c.Bytes += o.Bytes
	c.Packets += o.Packets
	c.ScaledBytes += o.ScaledBytes
	c.ScaledPackets += o.ScaledPackets
	c.Datagrams += o.Datagrams
}

// addFlow counts one flow of bytes and packets sampled 1 in rate.
func (c *Counts) addFlow(bytes, packets, rate uint64) {
	rate = max(rate, 1)
	c.Flows++
	c.Bytes += bytes
	c.Packets += packets
	c.ScaledBytes += bytes * rate
	c.ScaledPackets += packets * rate
}

// ExporterSummary is one exporter's counts. Address is the sampler_address
// the collector stores: for NetFlow v9 and IPFIX the datagrams' source
// address, for sFlow the agent address in them, for kafka the flows' own.
// Type is the FlowType name goflow2 stamps (SFLOW_5, NETFLOW_V9, IPFIX).
type ExporterSummary struct {
	Address string `json:"address"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Counts
}

// WriteFile writes s as indented JSON to path.
func (s Summary) WriteFile(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write the summary: %w", err)
	}
	return nil
}

// exporterInfo is one exporter of the generator, in its order.
type exporterInfo struct {
	addr [4]byte // the sampler address the generator writes in its flows
	name string
	typ  pb.FlowMessage_FlowType
	rate uint64 // the rate its flows carry (NetFlow v5's 0 included)
	// planRate is the exporter's own sampling rate, which the router
	// protocols announce: the exporters file's (NetFlow v5 ones too).
	planRate uint64
}

// exporterInfos lists g's exporters in the order of its exporter table.
func exporterInfos(g *Generator, plan *Plan) []exporterInfo {
	if g.real == nil {
		out := make([]exporterInfo, len(g.exporters))
		for i, e := range g.exporters {
			out[i] = exporterInfo{addr: e.addr, typ: e.typ, rate: e.rate, planRate: e.rate}
		}
		return out
	}
	out := make([]exporterInfo, len(g.real.exporters))
	for i, e := range g.real.exporters {
		out[i] = exporterInfo{addr: e.addr, typ: e.typ, rate: e.rate, planRate: e.rate}
		if plan != nil && i < len(plan.Exporters) {
			out[i].name = plan.Exporters[i].Name
			out[i].planRate = plan.Exporters[i].SamplingRate
		}
	}
	return out
}

// exporterIndex finds the exporter of a flow by its sampler address: a
// short linear scan, cheaper than a map for a handful of exporters.
func exporterIndex(infos []exporterInfo, sampler []byte) int {
	if len(sampler) == 4 {
		a := [4]byte(sampler)
		for i := range infos {
			if infos[i].addr == a {
				return i
			}
		}
	}
	return -1
}

// truthExporter is one exporter's running counts, read by the metrics
// and the summary while the one sending goroutine adds to them.
type truthExporter struct {
	address, name, typ                                           string
	flows, bytes, packets, scaledBytes, scaledPackets, datagrams atomic.Uint64
}

func (e *truthExporter) add(c Counts) {
	e.flows.Add(c.Flows)
	e.bytes.Add(c.Bytes)
	e.packets.Add(c.Packets)
	e.scaledBytes.Add(c.ScaledBytes)
	e.scaledPackets.Add(c.ScaledPackets)
	e.datagrams.Add(c.Datagrams)
}

func (e *truthExporter) counts() Counts {
	return Counts{Flows: e.flows.Load(), Bytes: e.bytes.Load(), Packets: e.packets.Load(),
		ScaledBytes: e.scaledBytes.Load(), ScaledPackets: e.scaledPackets.Load(), Datagrams: e.datagrams.Load()}
}

// truth is the per-exporter counts of a run, exported as the
// flowpipeline_mocker_sent_* counters (labels exporter, protocol) and as
// the Summary.
type truth struct {
	exporters atomic.Pointer[[]*truthExporter] // set once when Run starts
	mu        sync.Mutex
	started   time.Time
	ended     time.Time
	collector string

	flows, bytes, packets, datagrams *prometheus.Desc
}

func newTruth() *truth {
	labels := []string{"exporter", "protocol"}
	return &truth{
		flows: prometheus.NewDesc("flowpipeline_mocker_sent_flows_total",
			"Flows sent, by exporter (sampler address as the collector stores it) and protocol (flow type): acknowledged by Kafka, or in datagrams the socket accepted.", labels, nil),
		bytes: prometheus.NewDesc("flowpipeline_mocker_sent_bytes_total",
			"Sampled bytes of the flows sent (what the collector stores as bytes), by exporter and protocol.", labels, nil),
		packets: prometheus.NewDesc("flowpipeline_mocker_sent_packets_total",
			"Sampled packets of the flows sent, by exporter and protocol.", labels, nil),
		datagrams: prometheus.NewDesc("flowpipeline_mocker_sent_datagrams_total",
			"UDP datagrams sent (NetFlow v9, IPFIX, sFlow; templates-only ones included), by exporter and protocol; 0 for kafka.", labels, nil),
	}
}

// begin fixes the exporters of the run: their summary addresses and names.
func (t *truth) begin(exporters []*truthExporter, collector string) {
	t.mu.Lock()
	t.started, t.collector = time.Now(), collector
	t.mu.Unlock()
	t.exporters.Store(&exporters)
}

func (t *truth) end() {
	t.mu.Lock()
	t.ended = time.Now()
	t.mu.Unlock()
}

func (t *truth) list() []*truthExporter {
	if p := t.exporters.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *truth) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.flows
	ch <- t.bytes
	ch <- t.packets
	ch <- t.datagrams
}

func (t *truth) Collect(ch chan<- prometheus.Metric) {
	for _, e := range t.list() {
		c := e.counts()
		for _, m := range []struct {
			d *prometheus.Desc
			v uint64
		}{{t.flows, c.Flows}, {t.bytes, c.Bytes}, {t.packets, c.Packets}, {t.datagrams, c.Datagrams}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), e.address, e.typ)
		}
	}
}

// Summary is what the run has sent so far (all of it once Run returned).
func (m *Mocker) Summary() Summary {
	t := m.truth
	t.mu.Lock()
	s := Summary{Output: m.cfg.Output, Collector: t.collector, Seed: m.cfg.Seed,
		Started: t.started, Ended: t.ended, Exporters: []ExporterSummary{}}
	t.mu.Unlock()
	for _, e := range t.list() {
		c := e.counts()
		s.Totals.add(c)
		s.Exporters = append(s.Exporters, ExporterSummary{Address: e.address, Name: e.name, Type: e.typ, Counts: c})
	}
	if len(m.cfg.Attacks) > 0 {
		s.Attacks = m.AttackSummaries()
	}
	return s
}

// kafkaTruth sets up the counts of a Kafka run: one per exporter of the
// generator, with the flows' own sampler address and type.
func (m *Mocker) kafkaTruth(infos []exporterInfo) {
	list := make([]*truthExporter, len(infos))
	for i, info := range infos {
		list[i] = &truthExporter{address: netip.AddrFrom4(info.addr).String(), name: info.name, typ: info.typ.String()}
	}
	m.truth.begin(list, "")
}

// countRecord adds an acknowledged record's counts to the truth.
func (m *Mocker) countRecord(tally []Counts) {
	list := m.truth.list()
	for i := range tally {
		if tally[i].Flows > 0 && i < len(list) {
			list[i].add(tally[i])
		}
	}
}
