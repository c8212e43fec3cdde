package clickhouse_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// docsEnrichment is what the enricher could add to the mocker's flow m
// with a small networks and exporters file: one country and name per AS,
// the destination as a customer at a site, the exporter and its
// interfaces (transit in, customer out).
func docsEnrichment(m *pb.FlowMessage) *pb.Enrichment {
	countries := []string{"US", "DE", "FR", "NL", "JP", "BR", "CH"}
	names := []string{"EXAMPLE-CDN", "EXAMPLE-CLOUD", "Example Telecom", "EXAMPLE-ISP", "Beispiel AG"}
	customers := []struct{ name, site string }{{"customer-a", "par1"}, {"customer-b", "fra1"}, {"customer-c", "par1"}}
	c := customers[m.DstAs%uint32(len(customers))]
	exporter := m.SamplerAddress[len(m.SamplerAddress)-1]
	return &pb.Enrichment{
		SrcCountry: countries[m.SrcAs%uint32(len(countries))], DstCountry: "FR",
		SrcAsName: names[m.SrcAs%uint32(len(names))], DstAsName: names[m.DstAs%uint32(len(names))],
		DstNetName: c.name, DstNetSite: c.site, DstNetRole: "customer",
		ExporterName: []string{"edge1.par1", "edge2.fra1"}[exporter%2],
		InIfName:     "et-0/0/" + string(rune('0'+m.InIf%4)), InIfSpeed: 100e9, InIfBoundary: pb.FlowMessage_BOUNDARY_EXTERNAL,
		OutIfName: "ae1" + string(rune('0'+m.OutIf%3)), OutIfSpeed: 10e9, OutIfBoundary: pb.FlowMessage_BOUNDARY_INTERNAL,
	}
}

// docs/clickhouse.md is tested: each ```sql block of its "# ClickHouse"
// section (the whole page) runs on the schema loaded with the mocker's flows
// (seed mockSeed), and a ```text block right after it must be that query's
// output, so the page shows real output. To regenerate the outputs after a
// schema or mocker change:
//
//	FLOWPIPELINE_README_UPDATE=1 go test ./compose/clickhouse -run TestREADME
//
// FLOWPIPELINE_README=path reads (and updates) another file than
// docs/clickhouse.md.
const readmeFormat = "PrettyCompactMonoBlock"

var readmeHeading = regexp.MustCompile(`^(#{1,6})\s+ClickHouse\s*$`)

type readmeBlock struct {
	sql        string
	start, end int  // lines of the sql fence, inclusive
	output     *int // first line of the text fence after it, if any
	outEnd     int
	text       string
}

// readmeSection returns the lines of the file and the [from, to) range of
// the ClickHouse section, or to == -1 when there is none.
func readmeSection(lines []string) (from, to int) {
	level := 0
	from, to = -1, -1
	inFence := false
	for i, l := range lines {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(l, "#") {
			continue
		}
		hashes := len(l) - len(strings.TrimLeft(l, "#"))
		if from < 0 {
			if m := readmeHeading.FindStringSubmatch(l); m != nil {
				from, level = i, len(m[1])
			}
			continue
		}
		if hashes <= level {
			return from, i
		}
	}
	if from >= 0 {
		return from, len(lines)
	}
	return -1, -1
}

func readmeBlocks(t *testing.T, lines []string, from, to int) []readmeBlock {
	var blocks []readmeBlock
	for i := from; i < to; i++ {
		if strings.TrimSpace(lines[i]) != "```sql" {
			continue
		}
		b := readmeBlock{start: i}
		j := i + 1
		for ; j < to && strings.TrimSpace(lines[j]) != "```"; j++ {
		}
		if j >= to {
			t.Fatalf("line %d: unterminated ```sql block", i+1)
		}
		b.sql, b.end = strings.Join(lines[i+1:j], "\n"), j
		k := j + 1
		for k < to && strings.TrimSpace(lines[k]) == "" {
			k++
		}
		if k < to && strings.TrimSpace(lines[k]) == "```text" {
			e := k + 1
			for ; e < to && strings.TrimSpace(lines[e]) != "```"; e++ {
			}
			if e >= to {
				t.Fatalf("line %d: unterminated ```text block", k+1)
			}
			start := k
			b.output, b.outEnd, b.text = &start, e, strings.Join(lines[k+1:e], "\n")
		}
		blocks = append(blocks, b)
		i = j
	}
	return blocks
}

func normalize(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}

// readmeText is the ClickHouse page of the docs, docs/clickhouse.md.
func readmeText(t *testing.T) string {
	t.Helper()
	content, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "clickhouse.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(content), "\n")
	from, to := readmeSection(lines)
	if from < 0 {
		t.Fatal("docs/clickhouse.md has no \"# ClickHouse\" section")
	}
	return strings.Join(lines[from:to], "\n")
}

func TestREADMEQueries(t *testing.T) {
	path := os.Getenv("FLOWPIPELINE_README")
	if path == "" {
		path = filepath.Join(repoRoot(t), "docs", "clickhouse.md")
	}
	content, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	lines := strings.Split(string(content), "\n")
	from, to := readmeSection(lines)
	if from < 0 {
		t.Fatalf("%s has no \"# ClickHouse\" section, so its queries cannot be checked", path)
	}
	blocks := readmeBlocks(t, lines, from, to)
	if len(blocks) == 0 {
		t.Fatalf("the ClickHouse section of %s has no ```sql block", path)
	}

	s := schemaDB(t, true)
	// One insert and merged tables, so that outputs do not depend on how
	// parts happened to merge.
	// Enriched as the enricher would, without overriding any collector
	// field, so that the other outputs are those of the mocker's flows.
	var record []byte
	for _, m := range mockMessages(mockSeed, mockFlows, mockStart, mockSpan) {
		record = pb.AppendEnrichedFrame(record, m.AppendWire(nil), docsEnrichment(m))
	}
	if err := s.InsertProtobuf("flows", record, protoSchema(t)); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"flows_raw", "flows_5m", "flows_1h", "flows_5m_enriched"} {
		if err := s.Exec("OPTIMIZE TABLE " + table + " FINAL"); err != nil {
			t.Fatal(err)
		}
	}

	update := os.Getenv("FLOWPIPELINE_README_UPDATE") == "1"
	var replaced []string
	last := 0
	for _, b := range blocks {
		out, err := s.Run(b.sql, readmeFormat)
		if err != nil {
			t.Errorf("%s: query at line %d fails: %v", path, b.start+1, err)
			continue
		}
		got := normalize(out)
		if update {
			end := b.end
			if b.output != nil {
				end = b.outEnd
			}
			replaced = append(replaced, lines[last:b.end+1]...)
			if got != "" {
				replaced = append(replaced, "", "```text", got, "```")
			}
			last = end + 1
			continue
		}
		switch {
		case b.output == nil && got != "":
			t.Errorf("%s: query at line %d has no ```text block with its output; it outputs:\n%s", path, b.start+1, got)
		case b.output != nil && normalize(b.text) != got:
			t.Errorf("%s: output at line %d is not what the query at line %d outputs now:\n%s\n(regenerate with FLOWPIPELINE_README_UPDATE=1)", path, *b.output+1, b.start+1, got)
		}
	}
	if update && !t.Failed() {
		replaced = append(replaced, lines[last:]...)
		if err := os.WriteFile(path, []byte(strings.Join(replaced, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the outputs of %d queries in %s", len(blocks), path)
	}
	t.Logf("%d queries of %s checked", len(blocks), path)
}
