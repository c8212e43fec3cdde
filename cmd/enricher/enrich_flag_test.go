package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/flowtest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/geotest"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
	"github.com/spendletonliveaction/flow-pipeline/mocker"
	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// TestEnrichFlagValues: -enrich reads the booleans and compose/.env's
// on/off; anything else is a bad flag (exit 2).
func TestEnrichFlagValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"-enrich"}, true},
		{[]string{"-enrich=on"}, true},
		{[]string{"-enrich=ON"}, true},
		{[]string{"-enrich=true"}, true},
		{[]string{"-enrich=1"}, true},
		{[]string{"-enrich=off"}, false},
		{[]string{"-enrich=Off"}, false},
		{[]string{"-enrich=false"}, false},
		{[]string{"-enrich=0"}, false},
	} {
		cfg, scfg := enricher.DefaultConfig(), sources.DefaultConfig()
		var out bytes.Buffer
		fs, f := newFlagSet(&out, &cfg, &scfg)
		if err := fs.Parse(tc.args); err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if bool(f.enrich) != tc.want {
			t.Errorf("%q: enrich = %v, want %v", tc.args, f.enrich, tc.want)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"-enrich=maybe"}, &out); code != 2 || !strings.Contains(out.String(), `"maybe" is not on, off, true or false`) {
		t.Errorf("-enrich=maybe: exit %d, %q; want 2 and the accepted words", code, out.String())
	}
}

// TestEnrichOff: with -enrich=off (compose's ENRICHMENT=off) every flow
// goes out byte for byte as it came in, exactly once, although the data
// files given would have enriched it.
func TestEnrichOff(t *testing.T) {
	k := testenv.SharedKafka(t)
	in, out := testenv.UniqueName(t), testenv.UniqueName(t)
	k.CreateTopic(t, in, 2)
	k.CreateTopic(t, out, 2)
	cfg := geotest.Write(t, t.TempDir())
	loader, err := sources.NewLoader(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := loader.Current()

	const n = 3000
	originals := map[flowKey][]byte{}
	var values [][]byte
	var want flowtest.Totals
	wouldChange := 0
	g := mocker.NewGenerator(31)
	var m pb.FlowMessage
	now := time.Now().Add(-time.Hour)
	for i := range n {
		g.Next(&m, now.Add(time.Duration(i)*time.Microsecond))
		v, _ := pb.AppendDelimited(nil, &m)
		values = append(values, v)
		originals[flowKey{string(m.SamplerAddress), m.SequenceNum}] = v[len(v)-m.WireSize():]
		want.Flows++
		want.Bytes += int64(m.Bytes)
		want.Packets += int64(m.Packets)
		if expect(set, &m) != enrichedOf(&m) {
			wouldChange++
		}
	}
	if len(originals) != n {
		t.Fatalf("the generator repeated (sampler_address, sequence_num): %d distinct of %d", len(originals), n)
	}
	if wouldChange == 0 {
		t.Fatal("the data files would enrich no flow: this test would prove nothing")
	}
	flowtest.Produce(t, k.Brokers(), in, values)

	p := startBinary(t, append(kafkaArgs(k.Brokers(), in, out, "g", "enrich-off"), "-enrich=off",
		"-geo.country", cfg.CountryFile, "-geo.asn", cfg.ASNFiles[0], "-networks", cfg.NetworksFile, "-exporters", cfg.ExportersFile)...)
	s := readCommitted(t, k.Brokers(), out, want.Flows, 2*time.Minute, true)
	p.term(t)
	check(t, s, want)
	same := 0
	for key, orig := range originals {
		if f, ok := s.frames[key]; ok && bytes.Equal(f, orig) {
			same++
		}
	}
	if same != n {
		t.Errorf("%d of %d output frames equal their input frame byte for byte, want all (the data would have changed %d)", same, n, wouldChange)
	}
	t.Logf("%d flows passed through unchanged; enrichment on would have changed %d", same, wouldChange)
}
