package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// builds holds one build per package directory, for the life of the test
// binary: the tests of a command start its binary many times.
var builds sync.Map // dir -> *builtBinary

type builtBinary struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// BuildCommand builds the command in dir (a package directory, "." for the
// test's own) once per test binary and returns the executable's path.
func BuildCommand(t testing.TB, dir, name string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(dir, &builtBinary{})
	b := v.(*builtBinary)
	b.once.Do(func() {
		tmp, err := os.MkdirTemp("", name+"-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(tmp, name)
		cmd := exec.Command("go", "build", "-o", b.path, ".")
		cmd.Dir = dir
		b.out, b.err = cmd.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build %s (%s): %v\n%s", dir, name, b.err, b.out)
	}
	return b.path
}
