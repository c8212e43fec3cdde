package goflow2test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/netsampler/goflow2/v2/decoders/sflow"
	flowpb "github.com/netsampler/goflow2/v2/pb"
	"github.com/netsampler/goflow2/v2/producer"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"
	"google.golang.org/protobuf/proto"
)

// Collector decodes datagrams as a goflow2 v2.2.6 collector does, in
// process: its decoders, one NetFlow template system per source address
// and port (as its NetFlow pipe keeps them), and its protobuf producer with
// its default configuration and per-source sampling-rate system.
type Collector struct {
	t         testing.TB
	producer  producer.ProducerInterface
	templates map[netip.AddrPort]netflow.NetFlowTemplateSystem
}

// NewCollector returns a collector with no template learnt yet.
func NewCollector(t testing.TB) *Collector {
	cfg, err := (*protoproducer.ProducerConfig)(nil).Compile() // goflow2's default, no -mapping
	if err != nil {
		t.Fatal(err)
	}
	p, err := protoproducer.CreateProtoProducer(cfg, protoproducer.CreateSamplingSystem)
	if err != nil {
		t.Fatal(err)
	}
	return &Collector{t: t, producer: p, templates: map[netip.AddrPort]netflow.NetFlowTemplateSystem{}}
}

// Receive decodes one sFlow v5, NetFlow v9 or IPFIX datagram from src,
// received at tr, into the FlowMessages goflow2 would write; an error is
// what goflow2 would count as a decoding error (the datagram yields nothing).
func (c *Collector) Receive(datagram []byte, src netip.AddrPort, tr time.Time) ([]*flowpb.FlowMessage, error) {
	args := &producer.ProduceArgs{Src: src, Dst: netip.MustParseAddrPort("127.0.0.1:2055"),
		TimeReceived: tr, SamplerAddress: src.Addr()}
	var msg any
	if len(datagram) >= 4 && binary.BigEndian.Uint32(datagram) == 5 {
		var p sflow.Packet
		if err := sflow.DecodeMessageVersion(bytes.NewBuffer(datagram), &p); err != nil {
			return nil, err
		}
		msg = &p
	} else {
		ts, ok := c.templates[src]
		if !ok {
			ts = netflow.CreateTemplateSystem()
			c.templates[src] = ts
		}
		var v9 netflow.NFv9Packet
		var ipfix netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(datagram), ts, &v9, &ipfix); err != nil {
			return nil, err
		}
		msg = &ipfix
		if binary.BigEndian.Uint16(datagram) == 9 {
			msg = &v9
		}
	}
	set, err := c.producer.Produce(msg, args)
	defer c.producer.Commit(set)
	if err != nil {
		return nil, err
	}
	out := make([]*flowpb.FlowMessage, 0, len(set))
	for _, m := range set {
		// The producer pools its messages: keep copies.
		out = append(out, proto.Clone(&m.(*protoproducer.ProtoProducerMessage).FlowMessage).(*flowpb.FlowMessage))
	}
	return out, nil
}
