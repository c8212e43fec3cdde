package compose

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v4"
)

// stackFile is the part of a stack file this test reads: each service's
// extends, and whether it says anything beside it.
type stackFile struct {
	Services map[string]map[string]any `yaml:"services"`
}

// TestStacksPickFromServicesFile keeps every service defined once, in
// services.yml: a stack file only picks services from it (extends) and may
// add a volume (Prometheus' scrape file). A service written out in a stack
// file again would be a copy that drifts.
func TestStacksPickFromServicesFile(t *testing.T) {
	shared := readStackFile(t, "services.yml")
	used := map[string]bool{}
	for _, st := range stacks {
		f := readStackFile(t, st.file)
		for name, svc := range f.Services {
			ext, ok := svc["extends"].(map[string]any)
			if !ok {
				t.Errorf("%s: service %s is written out instead of extending services.yml", st.file, name)
				continue
			}
			if ext["file"] != "services.yml" {
				t.Errorf("%s: service %s extends %v, want services.yml", st.file, name, ext["file"])
			}
			base, _ := ext["service"].(string)
			if _, ok := shared.Services[base]; !ok {
				t.Errorf("%s: service %s extends %q, which services.yml does not define", st.file, name, base)
			}
			used[base] = true
			for key := range svc {
				if key != "extends" && !(name == "prometheus" && key == "volumes") {
					t.Errorf("%s: service %s sets %q beside extends; put it in services.yml", st.file, name, key)
				}
			}
		}
	}
	// A service of services.yml may extend another one there (a shared
	// base, such as the cluster's kafka-node); the base counts as used.
	for changed := true; changed; {
		changed = false
		for name, svc := range shared.Services {
			ext, ok := svc["extends"].(map[string]any)
			if !ok || !used[name] {
				continue
			}
			if _, other := ext["file"]; other {
				t.Errorf("services.yml: service %s extends another file", name)
			}
			if base, _ := ext["service"].(string); !used[base] {
				if _, ok := shared.Services[base]; !ok {
					t.Errorf("services.yml: service %s extends %q, which services.yml does not define", name, base)
				}
				used[base], changed = true, true
			}
		}
	}
	for name := range shared.Services {
		if !used[name] {
			t.Errorf("services.yml defines %s, which no stack uses", name)
		}
	}
	if len(shared.Services) == 0 {
		t.Fatal("services.yml defines no service")
	}
}

func readStackFile(t *testing.T, name string) stackFile {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var f stackFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}
