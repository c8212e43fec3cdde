package sources

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/gaissmai/bart"
	"go.yaml.in/yaml/v4"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// yamlEntries reads a file of the form `top: {key: value, ...}` and
// returns the keys with their value nodes, in file order. It walks the
// parsed nodes rather than decoding into a map: decoding a large mapping
// into a Go map is quadratic in this YAML library (100k prefixes took
// minutes), walking it is linear.
func yamlEntries(path, top string) ([]yamlEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil // an empty file: nothing listed
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping with the key %q", path, root.Line, top)
	}
	var m *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		if k.Value != top {
			return nil, fmt.Errorf("%s:%d: unknown key %q; the file holds only %q", path, k.Line, k.Value, top)
		}
		m = root.Content[i+1]
	}
	if m == nil || m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil, nil
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: %q must be a mapping", path, m.Line, top)
	}
	out := make([]yamlEntry, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		out = append(out, yamlEntry{key: m.Content[i].Value, line: m.Content[i].Line, value: m.Content[i+1]})
	}
	return out, nil
}

type yamlEntry struct {
	key   string
	line  int
	value *yaml.Node
}

// load decodes the entry's value strictly: an unknown field is an error,
// so a misspelt one is not silently ignored.
func (e yamlEntry) load(path string, v any) error {
	if err := e.value.Load(v, yaml.WithKnownFields()); err != nil {
		return fmt.Errorf("%s:%d: %s: %w", path, e.line, e.key, err)
	}
	return nil
}

type networkEntry struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"`
	Site   string `yaml:"site"`
	Region string `yaml:"region"`
	Tenant string `yaml:"tenant"`
}

// loadNetworks reads a networks file into a prefix table (longest match).
func loadNetworks(path string) (*bart.Table[*Network], error) {
	entries, err := yamlEntries(path, "networks")
	if err != nil {
		return nil, err
	}
	t := new(bart.Table[*Network])
	seen := make(map[netip.Prefix]string, len(entries))
	for _, e := range entries {
		k := e.key
		p, err := netip.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: networks key %q is not a prefix like 192.0.2.0/24 or 2001:db8::/32: %w", path, e.line, k, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s:%d: networks key %q has host bits set; write %s", path, e.line, k, p.Masked())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%s:%d: networks key %q is IPv4-mapped IPv6; write the IPv4 prefix", path, e.line, k)
		}
		if prev, dup := seen[p]; dup {
			return nil, fmt.Errorf("%s:%d: networks key %q is the same prefix as %q", path, e.line, k, prev)
		}
		seen[p] = k
		var v networkEntry
		if err := e.load(path, &v); err != nil {
			return nil, err
		}
		if err := textBounds(path, "network "+k, v.Name, v.Role, v.Site); err != nil {
			return nil, err
		}
		t.Insert(p, &Network{Name: v.Name, Role: v.Role, Site: v.Site, Region: v.Region, Tenant: v.Tenant})
	}
	return t, nil
}

type exporterEntry struct {
	Name            string `yaml:"name"`
	SamplingRate    uint64 `yaml:"sampling_rate"`
	DefaultBoundary string `yaml:"default_boundary"`
	Interfaces      map[uint32]struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
		Speed       uint64 `yaml:"speed"`
		Boundary    string `yaml:"boundary"`
	} `yaml:"interfaces"`
}

func parseBoundary(s string) (Boundary, bool) {
	switch s {
	case "":
		return BoundaryUndefined, true
	case "external":
		return BoundaryExternal, true
	case "internal":
		return BoundaryInternal, true
	}
	return 0, false
}

// maxSamplingRate is the flow bound the inserter enforces (2^32-1).
const maxSamplingRate = 1<<32 - 1

// loadExporters reads an exporters file, keyed by sampler address.
func loadExporters(path string) (map[netip.Addr]*Exporter, error) {
	entries, err := yamlEntries(path, "exporters")
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]*Exporter, len(entries))
	for _, en := range entries {
		k := en.key
		a, err := netip.ParseAddr(k)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s:%d: exporters key %q is not an IP address like 192.0.2.1 or 2001:db8::1", path, en.line, k)
		}
		a = a.Unmap()
		if _, dup := out[a]; dup {
			return nil, fmt.Errorf("%s:%d: exporters key %q names an exporter already listed", path, en.line, k)
		}
		var v exporterEntry
		if err := en.load(path, &v); err != nil {
			return nil, err
		}
		def, ok := parseBoundary(v.DefaultBoundary)
		if !ok {
			return nil, fmt.Errorf("%s:%d: exporter %s: default_boundary %q is neither external nor internal", path, en.line, k, v.DefaultBoundary)
		}
		if v.SamplingRate > maxSamplingRate {
			return nil, fmt.Errorf("%s:%d: exporter %s: sampling_rate %d is above 2^32-1", path, en.line, k, v.SamplingRate)
		}
		if err := textBounds(path, "exporter "+k, v.Name); err != nil {
			return nil, err
		}
		e := &Exporter{Name: v.Name, SamplingRate: v.SamplingRate, DefaultBoundary: def, Interfaces: make(map[uint32]Interface, len(v.Interfaces))}
		for idx, in := range v.Interfaces {
			b, ok := parseBoundary(in.Boundary)
			if !ok {
				return nil, fmt.Errorf("%s:%d: exporter %s interface %d: boundary %q is neither external nor internal", path, en.line, k, idx, in.Boundary)
			}
			if in.Boundary == "" {
				b = def
			}
			if err := textBounds(path, fmt.Sprintf("exporter %s interface %d", k, idx), in.Name); err != nil {
				return nil, err
			}
			if len(in.Description) > pb.MaxDescriptionBytes {
				return nil, fmt.Errorf("%s: exporter %s interface %d: description has %d bytes, at most %d are stored", path, k, idx, len(in.Description), pb.MaxDescriptionBytes)
			}
			e.Interfaces[idx] = Interface{Name: in.Name, Description: in.Description, Speed: in.Speed, Boundary: b}
		}
		out[a] = e
	}
	return out, nil
}

// textBounds refuses names longer than the stores keep (pb.MaxNameBytes):
// a flow carrying one would be rejected downstream.
func textBounds(path, what string, values ...string) error {
	for _, v := range values {
		if len(v) > pb.MaxNameBytes {
			return fmt.Errorf("%s: %s: %q... has %d bytes, at most %d are stored", path, what, pb.ClipText(v, 20), len(v), pb.MaxNameBytes)
		}
	}
	return nil
}
