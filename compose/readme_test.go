package compose

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The README is what users run first: every file, command and flag it names
// must exist, and every flag a binary accepts must be documented.

// readmeSections maps each binary to the README section documenting its flags.
var readmeSections = map[string]string{
	"mocker":   "## The mocker",
	"inserter": "## The inserter",
	"demo":     "## Without Docker",
}

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section returns the text from the heading starting with title to the
// next heading of the same level.
func section(t *testing.T, text, title string) string {
	t.Helper()
	start := strings.Index(text, "\n"+title)
	if start < 0 {
		t.Fatalf("README has no section %q", title)
	}
	rest := text[start+1:]
	if end := strings.Index(rest[len(title):], "\n## "); end >= 0 {
		return rest[:len(title)+end]
	}
	return rest
}

var tableFlagRe = regexp.MustCompile("(?m)^\\| `-([A-Za-z0-9][A-Za-z0-9._-]*)`")

func TestREADMEFlagTables(t *testing.T) {
	text := readme(t)
	for bin, title := range readmeSections {
		t.Run(bin, func(t *testing.T) {
			accepted := acceptedFlags(t, buildBinary(t, bin))
			documented := map[string]bool{}
			for _, m := range tableFlagRe.FindAllStringSubmatch(section(t, text, title), -1) {
				documented[m[1]] = true
				if !accepted[m[1]] {
					t.Errorf("README %q documents -%s, which %s does not accept", title, m[1], bin)
				}
			}
			for flag := range accepted {
				if !documented[flag] {
					t.Errorf("%s accepts -%s, which README %q does not document", bin, flag, title)
				}
			}
		})
	}
}

// commandRe finds our binaries run from source in the README's examples.
var commandRe = regexp.MustCompile("go run \\./cmd/([a-z]+)((?: +(?:\\\\\n\\s*)?-[^\\s\\\\`]+(?: +[^-\\s\\\\`][^\\s\\\\`]*)?)*)")

func TestREADMECommands(t *testing.T) {
	text := readme(t)
	matches := commandRe.FindAllStringSubmatch(text, -1)
	if len(matches) == 0 {
		t.Fatal("README runs none of our binaries with go run")
	}
	flags := 0
	for _, m := range matches {
		bin := m[1]
		if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", bin)); err != nil {
			t.Errorf("README runs ./cmd/%s, which does not exist", bin)
			continue
		}
		accepted := acceptedFlags(t, buildBinary(t, bin))
		for _, name := range flagNames(strings.Fields(strings.ReplaceAll(m[2], "\\\n", " "))) {
			flags++
			if !accepted[name] && name != "h" { // -h is the flag package's own
				t.Errorf("README runs `go run ./cmd/%s` with -%s, which it does not accept", bin, name)
			}
		}
	}
	t.Logf("%d go run commands with %d flags checked", len(matches), flags)
}

var composeFileRe = regexp.MustCompile(`docker-compose-[a-z-]+\.yml`)

func TestREADMEFilesExist(t *testing.T) {
	text := readme(t)
	files := composeFileRe.FindAllString(text, -1)
	if len(files) == 0 {
		t.Fatal("README names no compose file")
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(repoRoot(t), "compose", f)); err != nil {
			t.Errorf("README names compose/%s, which does not exist", f)
		}
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(makefile), -1) {
		targets = append(targets, m[1])
	}
	for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(text, -1) {
		if !slices.Contains(targets, m[1]) {
			t.Errorf("README says `make %s`, which the Makefile does not define", m[1])
		}
	}
}
