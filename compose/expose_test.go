package compose

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfileExposesMetricsPorts: each image's EXPOSE is the port of
// its binary's default -metrics.addr, read from cmd/<binary>/main.go.
func TestDockerfileExposesMetricsPorts(t *testing.T) {
	root := repoRoot(t)
	defaultAddr := regexp.MustCompile(`"metrics\.addr",\s*":(\d+)"`)
	checked := 0
	for _, s := range parseDockerfile(t, filepath.Join(root, "Dockerfile")) {
		src, err := os.ReadFile(filepath.Join(root, "cmd", s.name, "main.go"))
		if err != nil {
			continue // a build stage, not a binary's image
		}
		m := defaultAddr.FindSubmatch(src)
		if m == nil {
			t.Errorf("cmd/%s/main.go: no default -metrics.addr found", s.name)
			continue
		}
		var exposed []string
		for _, line := range s.lines {
			if f := strings.Fields(line); strings.EqualFold(f[0], "EXPOSE") {
				exposed = append(exposed, f[1:]...)
			}
		}
		if len(exposed) != 1 || strings.TrimSuffix(exposed[0], "/tcp") != string(m[1]) {
			t.Errorf("Dockerfile stage %s exposes %q; its binary serves metrics on :%s by default", s.name, exposed, m[1])
		}
		checked++
	}
	if checked != 4 {
		t.Errorf("checked %d images, want the mocker's, the inserter's, the enricher's and the detector's (4)", checked)
	}
}
