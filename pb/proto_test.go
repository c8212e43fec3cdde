package pb_test

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestGeneratedMatchesProto: flow.pb.go is committed (CI has no protoc)
// while ClickHouse reads flow.proto itself, so the two must declare the
// same fields, numbers, types and enum values. Run `make proto` after
// editing flow.proto.
func TestGeneratedMatchesProto(t *testing.T) {
	src, err := os.ReadFile("flow.proto")
	if err != nil {
		t.Fatal(err)
	}
	fieldRE := regexp.MustCompile(`(?m)^\s*(\w+)\s+(\w+)\s*=\s*(\d+);`)
	valueRE := regexp.MustCompile(`(?m)^\s*([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+);`)

	desc := ourFields()
	seen := 0
	for _, f := range fieldRE.FindAllSubmatch(src, -1) {
		typ, name, num := string(f[1]), protoreflect.Name(f[2]), string(f[3])
		fd := desc.ByName(name)
		if fd == nil {
			t.Errorf("flow.proto declares %s %s = %s; flow.pb.go has no such field", typ, name, num)
			continue
		}
		seen++
		if strconv.Itoa(int(fd.Number())) != num {
			t.Errorf("field %s: flow.proto says #%s, flow.pb.go #%d", name, num, fd.Number())
		}
		got := fd.Kind().String()
		if fd.Kind() == protoreflect.EnumKind {
			got = string(fd.Enum().Name())
		}
		if got != typ {
			t.Errorf("field %s: flow.proto says %s, flow.pb.go %s", name, typ, got)
		}
	}
	if seen != desc.Len() {
		t.Errorf("flow.proto declares %d of flow.pb.go's %d fields", seen, desc.Len())
	}

	want := map[string]string{}
	enums := (ourFields().ByName("type").ContainingMessage()).Enums()
	for i := 0; i < enums.Len(); i++ {
		vals := enums.Get(i).Values()
		for j := 0; j < vals.Len(); j++ {
			want[string(vals.Get(j).Name())] = strconv.Itoa(int(vals.Get(j).Number()))
		}
	}
	values := valueRE.FindAllSubmatch(src, -1)
	for _, v := range values {
		if n, ok := want[string(v[1])]; !ok || n != string(v[2]) {
			t.Errorf("flow.proto enum value %s = %s; flow.pb.go has %q", v[1], v[2], n)
		}
	}
	if len(values) != len(want) {
		t.Errorf("flow.proto declares %d enum values, flow.pb.go %d", len(values), len(want))
	}
}
