package sources

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"

	"github.com/gaissmai/bart"
	"go.yaml.in/yaml/v4"

	"github.com/spendletonliveaction/flow-pipeline/pb"
)

// decodeYAML decodes a whole file strictly: an unknown key is an error, so
// a misspelt field is not silently ignored.
func decodeYAML(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

type networksFile struct {
	Networks map[string]struct {
		Name   string `yaml:"name"`
		Role   string `yaml:"role"`
		Site   string `yaml:"site"`
		Region string `yaml:"region"`
		Tenant string `yaml:"tenant"`
	} `yaml:"networks"`
}

// loadNetworks reads a networks file into a prefix table (longest match).
func loadNetworks(path string) (*bart.Table[*Network], error) {
	var f networksFile
	if err := decodeYAML(path, &f); err != nil {
		return nil, err
	}
	t := new(bart.Table[*Network])
	seen := map[netip.Prefix]string{}
	keys := make([]string, 0, len(f.Networks))
	for k := range f.Networks {
		keys = append(keys, k)
	}
	slices.Sort(keys) // errors in a stable order
	for _, k := range keys {
		p, err := netip.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("%s: networks key %q is not a prefix like 192.0.2.0/24 or 2001:db8::/32: %w", path, k, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s: networks key %q has host bits set; write %s", path, k, p.Masked())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%s: networks key %q is IPv4-mapped IPv6; write the IPv4 prefix", path, k)
		}
		if prev, dup := seen[p]; dup {
			return nil, fmt.Errorf("%s: networks keys %q and %q are the same prefix", path, prev, k)
		}
		seen[p] = k
		v := f.Networks[k]
		if err := textBounds(path, "network "+k, v.Name, v.Role, v.Site); err != nil {
			return nil, err
		}
		t.Insert(p, &Network{Name: v.Name, Role: v.Role, Site: v.Site, Region: v.Region, Tenant: v.Tenant})
	}
	return t, nil
}

type exportersFile struct {
	Exporters map[string]struct {
		Name            string `yaml:"name"`
		SamplingRate    uint64 `yaml:"sampling_rate"`
		DefaultBoundary string `yaml:"default_boundary"`
		Interfaces      map[uint32]struct {
			Name        string `yaml:"name"`
			Description string `yaml:"description"`
			Speed       uint64 `yaml:"speed"`
			Boundary    string `yaml:"boundary"`
		} `yaml:"interfaces"`
	} `yaml:"exporters"`
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
	var f exportersFile
	if err := decodeYAML(path, &f); err != nil {
		return nil, err
	}
	out := make(map[netip.Addr]*Exporter, len(f.Exporters))
	keys := make([]string, 0, len(f.Exporters))
	for k := range f.Exporters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a, err := netip.ParseAddr(k)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s: exporters key %q is not an IP address like 192.0.2.1 or 2001:db8::1", path, k)
		}
		a = a.Unmap()
		if _, dup := out[a]; dup {
			return nil, fmt.Errorf("%s: exporters key %q names an exporter already listed", path, k)
		}
		v := f.Exporters[k]
		def, ok := parseBoundary(v.DefaultBoundary)
		if !ok {
			return nil, fmt.Errorf("%s: exporter %s: default_boundary %q is neither external nor internal", path, k, v.DefaultBoundary)
		}
		if v.SamplingRate > maxSamplingRate {
			return nil, fmt.Errorf("%s: exporter %s: sampling_rate %d is above 2^32-1", path, k, v.SamplingRate)
		}
		if err := textBounds(path, "exporter "+k, v.Name); err != nil {
			return nil, err
		}
		e := &Exporter{Name: v.Name, SamplingRate: v.SamplingRate, DefaultBoundary: def, Interfaces: make(map[uint32]Interface, len(v.Interfaces))}
		for idx, in := range v.Interfaces {
			b, ok := parseBoundary(in.Boundary)
			if !ok {
				return nil, fmt.Errorf("%s: exporter %s interface %d: boundary %q is neither external nor internal", path, k, idx, in.Boundary)
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
