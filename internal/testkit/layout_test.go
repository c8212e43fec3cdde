package testkit_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// pkg is the part of `go list -json` these tests read.
type pkg struct {
	ImportPath   string
	Dir          string
	Module       *struct{ Path string }
	Imports      []string // of the non-test files only
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
}

// listPackages runs `go list -json` on the module's packages (or on the
// given patterns) from the repository root.
func listPackages(t *testing.T, args ...string) []pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the layout checks need the go command on PATH: %v", err)
	}
	cmd := exec.Command(goBin, append([]string{"list", "-json"}, args...)...)
	cmd.Dir = filepath.Join("..", "..") // internal/testkit -> repository root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

func modulePath(t *testing.T, pkgs []pkg) string {
	for _, p := range pkgs {
		if p.Module != nil {
			return p.Module.Path
		}
	}
	t.Fatal("go list reported no module")
	return ""
}

// productionViolations lists the imports a production package must not
// have: a test kit, or the testing package (which also registers the
// -test.* flags in every binary that links it).
func productionViolations(importPath string, imports []string, testkit string) []string {
	if importPath == testkit || strings.HasPrefix(importPath, testkit+"/") {
		return nil // test code may import anything
	}
	var bad []string
	for _, imp := range imports {
		if imp == testkit || strings.HasPrefix(imp, testkit+"/") || imp == "testing" || strings.HasPrefix(imp, "testing/") {
			bad = append(bad, imp)
		}
	}
	return bad
}

// TestProductionImportsNoTestCode: what ships never imports a test kit or
// the testing package, directly (every package of the module, test files
// aside) or through a dependency (every binary under cmd/).
func TestProductionImportsNoTestCode(t *testing.T) {
	pkgs := listPackages(t, "./...")
	mod := modulePath(t, pkgs)
	testkit := mod + "/internal/testkit"
	checked := 0
	for _, p := range pkgs {
		if bad := productionViolations(p.ImportPath, p.Imports, testkit); len(bad) > 0 {
			t.Errorf("production package %s imports test-only code %q: move the code that needs it under internal/testkit, or into a _test.go file",
				p.ImportPath, bad)
		}
		if !strings.HasPrefix(p.ImportPath, testkit) {
			checked++
		}
	}
	if checked < 8 {
		t.Fatalf("only %d production packages checked; go list is not seeing the module", checked)
	}

	// Transitively: every binary's full dependency list.
	for _, p := range listPackages(t, "-deps", "./cmd/...") {
		if p.ImportPath == "testing" || strings.HasPrefix(p.ImportPath, testkit) {
			t.Errorf("a binary under cmd/ links %s: find the production package importing it with `go list -deps ./cmd/...`", p.ImportPath)
		}
	}
}

// TestProductionViolationsCanFail proves the check above is not vacuous.
func TestProductionViolationsCanFail(t *testing.T) {
	const tk = "example.com/m/internal/testkit"
	for _, tc := range []struct {
		pkg     string
		imports []string
		want    int
	}{
		{"example.com/m/mocker", []string{"fmt", "example.com/m/pb"}, 0},
		{"example.com/m/mocker", []string{"fmt", tk + "/testenv"}, 1},
		{"example.com/m/inserter", []string{"testing", "testing/fstest"}, 2},
		{tk + "/testenv", []string{"testing", tk + "/chdb"}, 0},
		{"example.com/m/internal/testkitten", []string{"example.com/m/internal/testkitten2"}, 0},
	} {
		if got := productionViolations(tc.pkg, tc.imports, tk); len(got) != tc.want {
			t.Errorf("productionViolations(%s, %q) = %q, want %d violations", tc.pkg, tc.imports, got, tc.want)
		}
	}
}

// saramaNewConfigCalls counts the calls of sarama.NewConfig in a Go file,
// whatever name the file imports sarama under.
func saramaNewConfigCalls(fset *token.FileSet, path string, src any) (int, error) {
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return 0, err
	}
	var names []string
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/IBM/sarama" {
			name := "sarama"
			if imp.Name != nil {
				name = imp.Name.Name
			}
			names = append(names, name)
		}
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		if sel, ok := node.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewConfig" {
			if id, ok := sel.X.(*ast.Ident); ok && slices.Contains(names, id.Name) {
				n++
			}
		}
		return true
	})
	return n, nil
}

// TestSaramaConfiguredInOnePackage: every Kafka client configuration, in
// production code and tests alike, starts from internal/kafka.NewConfig,
// so the version floor and shared settings cannot drift between copies.
func TestSaramaConfiguredInOnePackage(t *testing.T) {
	pkgs := listPackages(t, "./...")
	want := modulePath(t, pkgs) + "/internal/kafka"
	fset := token.NewFileSet()
	var found []string
	for _, p := range pkgs {
		for _, name := range slices.Concat(p.GoFiles, p.TestGoFiles, p.XTestGoFiles) {
			path := filepath.Join(p.Dir, name)
			n, err := saramaNewConfigCalls(fset, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				continue
			}
			found = append(found, p.ImportPath)
			if p.ImportPath != want {
				t.Errorf("%s calls sarama.NewConfig %d times: build the configuration with internal/kafka.NewConfig (and its options) instead", path, n)
			}
		}
	}
	for _, p := range pkgs {
		if p.ImportPath != want {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, modulePath(t, pkgs)+"/") {
				t.Errorf("%s imports %s: it must stay at the bottom of the import graph", want, imp)
			}
		}
	}
	if !slices.Contains(found, want) {
		t.Errorf("%s no longer calls sarama.NewConfig; update this test if the base configuration moved", want)
	}
}

func TestSaramaNewConfigCallsCanFail(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want int
	}{
		{`package p; import "github.com/IBM/sarama"; var c = sarama.NewConfig()`, 1},
		{`package p; import s "github.com/IBM/sarama"; func f() { _ = s.NewConfig(); _ = s.NewConfig() }`, 2},
		{`package p; import "other/sarama"; var c = sarama.NewConfig()`, 0},
		{`package p; import "github.com/IBM/sarama"; var s = "sarama.NewConfig()"; var v sarama.KafkaVersion`, 0},
	} {
		n, err := saramaNewConfigCalls(token.NewFileSet(), "x.go", tc.src)
		if err != nil || n != tc.want {
			t.Errorf("%s: %d calls, %v; want %d", tc.src, n, err, tc.want)
		}
	}
}
