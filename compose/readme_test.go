package compose

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// The README and the pages of docs/ are what users run first: every file,
// command, flag and link they name must exist, and every flag a binary
// accepts must be documented on its page.

// flagPages maps each binary to the page whose flag table documents its
// flags: every row of a table starting with | `-flag` on that page.
var flagPages = map[string]string{
	"mocker":   "docs/mocker.md",
	"inserter": "docs/inserter.md",
	"enricher": "docs/enricher.md",
	"detector": "docs/detector.md",
	"demo":     "docs/demo.md",
}

// doc is one markdown file: its path from the repository root and its text.
type doc struct{ path, text string }

func readDoc(t *testing.T, path string) doc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return doc{path, string(b)}
}

// docs returns README.md and every page of docs/.
func docs(t *testing.T) []doc {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(repoRoot(t), "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("docs/ has no page")
	}
	all := []doc{readDoc(t, "README.md")}
	for _, p := range pages {
		all = append(all, readDoc(t, "docs/"+filepath.Base(p)))
	}
	return all
}

var tableFlagRe = regexp.MustCompile("(?m)^\\| `-([A-Za-z0-9][A-Za-z0-9._-]*)`")

func TestREADMEFlagTables(t *testing.T) {
	for bin, page := range flagPages {
		t.Run(bin, func(t *testing.T) {
			accepted := acceptedFlags(t, buildBinary(t, bin))
			documented := map[string]bool{}
			for _, m := range tableFlagRe.FindAllStringSubmatch(readDoc(t, page).text, -1) {
				documented[m[1]] = true
				if !accepted[m[1]] {
					t.Errorf("%s documents -%s, which %s does not accept", page, m[1], bin)
				}
			}
			for flag := range accepted {
				if !documented[flag] {
					t.Errorf("%s accepts -%s, which %s does not document", bin, flag, page)
				}
			}
		})
	}
}

// commandRe finds our binaries run from source in the README's examples.
var commandRe = regexp.MustCompile("go run \\./cmd/([a-z]+)((?: +(?:\\\\\n\\s*)?-[^\\s\\\\`]+(?: +[^-\\s\\\\`][^\\s\\\\`]*)?)*)")

func TestREADMECommands(t *testing.T) {
	commands, flags := 0, 0
	for _, d := range docs(t) {
		for _, m := range commandRe.FindAllStringSubmatch(d.text, -1) {
			commands++
			bin := m[1]
			if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", bin)); err != nil {
				t.Errorf("%s runs ./cmd/%s, which does not exist", d.path, bin)
				continue
			}
			accepted := acceptedFlags(t, buildBinary(t, bin))
			for _, name := range flagNames(strings.Fields(strings.ReplaceAll(m[2], "\\\n", " "))) {
				flags++
				if !accepted[name] && name != "h" { // -h is the flag package's own
					t.Errorf("%s runs `go run ./cmd/%s` with -%s, which it does not accept", d.path, bin, name)
				}
			}
		}
	}
	if commands == 0 {
		t.Fatal("neither the README nor docs/ runs any of our binaries with go run")
	}
	t.Logf("%d go run commands with %d flags checked", commands, flags)
}

var composeFileRe = regexp.MustCompile(`docker-compose-[a-z-]+\.yml`)

func TestREADMEFilesExist(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(makefile), -1) {
		targets = append(targets, m[1])
	}
	files := 0
	for _, d := range docs(t) {
		for _, f := range composeFileRe.FindAllString(d.text, -1) {
			files++
			if _, err := os.Stat(filepath.Join(repoRoot(t), "compose", f)); err != nil {
				t.Errorf("%s names compose/%s, which does not exist", d.path, f)
			}
		}
		for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(d.text, -1) {
			if !slices.Contains(targets, m[1]) {
				t.Errorf("%s says `make %s`, which the Makefile does not define", d.path, m[1])
			}
		}
	}
	if files == 0 {
		t.Fatal("neither the README nor docs/ names a compose file")
	}
}

// linkRe finds markdown links; the target is m[1] without its #anchor.
var linkRe = regexp.MustCompile(`\]\(([^)#\s]*)(#[^)\s]*)?\)`)

// TestREADMELinks: every relative link of the README and docs/ points to a
// file that exists, and every #anchor to a heading of that page; the README
// names every page of docs/ (its map of the docs) and keeps the commands
// that run, demo and test the project (`make test` is what CI runs).
func TestREADMELinks(t *testing.T) {
	all := docs(t)
	byPath := map[string]doc{}
	for _, d := range all {
		byPath[d.path] = d
	}
	for _, d := range all {
		for _, m := range linkRe.FindAllStringSubmatch(d.text, -1) {
			target, anchor := m[1], strings.TrimPrefix(m[2], "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			linked := d
			if target != "" {
				rel := filepath.ToSlash(filepath.Join(filepath.Dir(d.path), target))
				if _, err := os.Stat(filepath.Join(repoRoot(t), filepath.FromSlash(rel))); err != nil {
					t.Errorf("%s links to %s, which does not exist", d.path, target)
					continue
				}
				var ok bool
				if linked, ok = byPath[rel]; !ok {
					continue // not a page: no headings to check
				}
			}
			if anchor != "" && !slices.Contains(anchors(linked.text), anchor) {
				t.Errorf("%s links to %s#%s, which has no such heading", d.path, linked.path, anchor)
			}
		}
	}
	readme := all[0].text
	for _, d := range all[1:] {
		if !strings.Contains(readme, d.path) {
			t.Errorf("README.md does not name %s in its map of the docs", d.path)
		}
	}
	for _, cmd := range []string{"make test", "make demo", "docker compose -f docker-compose-postgres-mock.yml up"} {
		if !strings.Contains(readme, cmd) {
			t.Errorf("README.md no longer says %q", cmd)
		}
	}
}

// anchors returns the GitHub anchors of a page's headings: lower case,
// punctuation dropped, spaces turned into hyphens.
func anchors(text string) []string {
	var out []string
	fence := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r):
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}
