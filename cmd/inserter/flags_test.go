package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestMistypedFlag: a flag that does not exist is a usage error, exit 2,
// as in the mocker, the enricher and the demo.
func TestMistypedFlag(t *testing.T) {
	for _, args := range [][]string{{"-nosuchflag"}, {"-kafka.brokerz", "x:9092"}, {"extra"}} {
		var out bytes.Buffer
		if code := run(args, &out); code != 2 || (args[0] != "extra" && !strings.Contains(out.String(), "flag provided but not defined")) {
			t.Errorf("inserter %q: exit %d, output %q; want 2 and the flag named", args, code, out.String())
		}
	}
}
