package compose

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stage is one FROM of the Dockerfile and the instructions under it.
type stage struct {
	base, name string
	lines      []string
}

// parseDockerfile splits a Dockerfile into stages; enough for the checks
// below (continuation lines are joined, comments dropped).
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\\\r?\n`).ReplaceAllString(string(raw), " ")
	var stages []stage
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			s := stage{}
			args := f[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				args = args[1:]
			}
			if len(args) >= 1 {
				s.base = args[0]
			}
			if len(args) == 3 && strings.EqualFold(args[1], "AS") {
				s.name = args[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			continue
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 3 {
		t.Fatalf("%d stages: want a multi-stage build (build + one final stage per binary)", len(stages))
	}
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
		if byName[s.base].name != "" || s.base == "scratch" {
			continue // built on an earlier stage, or on nothing
		}
		if _, tag := imageRef(s.base); pinnedTag(tag) != "" {
			t.Errorf("stage %s: base image %s %s", s.name, s.base, pinnedTag(tag))
		}
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(goMod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	builders := 0
	for _, s := range stages {
		if repo, tag := imageRef(s.base); repo == "golang" {
			builders++
			if !strings.HasPrefix(tag, string(goVersion[1])+"-") && tag != string(goVersion[1]) {
				t.Errorf("build stage uses %s; go.mod wants go %s", s.base, goVersion[1])
			}
		}
	}
	if builders == 0 {
		t.Error("no golang build stage")
	}
	all := func(s stage) string { return strings.Join(s.lines, "\n") }
	for _, target := range []string{"mocker", "inserter", "enricher", "detector"} {
		final, ok := byName[target]
		if !ok {
			t.Errorf("no stage named %s: `docker build --target %s` and compose need it", target, target)
			continue
		}
		if final.base != "scratch" {
			t.Errorf("target %s is based on %s; want scratch: the binary is static and needs nothing else", target, final.base)
		}
		user := ""
		for _, l := range final.lines {
			if f := strings.Fields(l); strings.EqualFold(f[0], "USER") && len(f) > 1 {
				user = f[1]
			}
		}
		if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
			t.Errorf("target %s runs as %q; want a non-root USER", target, user)
		}
		if !strings.Contains(all(final), "ENTRYPOINT") || !strings.Contains(all(final), "/"+target) {
			t.Errorf("target %s does not run the %s binary", target, target)
		}
		// Its binary is built statically, trimmed and stripped.
		var build string
		for _, s := range stages {
			if strings.Contains(all(s), "./cmd/"+target) {
				build = all(s) + "\n" + all(byName[s.base])
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`} {
			if !strings.Contains(build, want) {
				t.Errorf("the build of %s lacks %s", target, want)
			}
		}
	}
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	for _, want := range []string{".git", ".cache"} {
		if !strings.Contains("\n"+string(ignore)+"\n", "\n"+want+"\n") {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// TestDockerContextHoldsTheSources fails when .dockerignore leaves out a
// folder whose Go packages the binaries build from (an embedded data
// package, say): `docker build` would fail on a user's machine only.
func TestDockerContextHoldsTheSources(t *testing.T) {
	root := repoRoot(t)
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "../cmd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var dirs []string
	for _, dir := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, dir); err == nil && !strings.HasPrefix(rel, "..") {
			dirs = append(dirs, filepath.ToSlash(rel))
		}
	}
	if len(dirs) < 5 {
		t.Fatalf("go list found only %d packages of this module: %q", len(dirs), dirs)
	}
	for _, line := range strings.Split(string(ignore), "\n") {
		pattern := strings.TrimSuffix(strings.TrimSpace(line), "/")
		if pattern == "" || strings.HasPrefix(pattern, "#") || strings.HasPrefix(pattern, "!") {
			continue
		}
		for _, dir := range dirs {
			if ok, _ := filepath.Match(pattern, dir); ok || strings.HasPrefix(dir+"/", pattern+"/") {
				t.Errorf(".dockerignore's %q leaves out %s, which the binaries build from", pattern, dir)
			}
		}
	}
}
