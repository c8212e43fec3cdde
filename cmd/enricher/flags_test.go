package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	iproc "github.com/spendletonliveaction/flow-pipeline/internal/proc"
	"github.com/spendletonliveaction/flow-pipeline/internal/testkit/testenv"
)

// TestBadFlags: bad flags exit 2 with the flag's name, never a Config field.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-kafka.transaction.interval", "0"}, "-kafka.transaction.interval 0s must be positive"},
		{[]string{"-kafka.out.topic", "flows"}, "-kafka.out.topic and -kafka.dlq must differ from -kafka.topic"},
		{[]string{"-kafka.brokers", "nohost"}, `-kafka.brokers: "nohost" is not host:port`},
		{[]string{"-geo.asn", "a.csv", "-geo.asn", "a.csv"}, "-geo.asn[1] repeats -geo.asn[0]"},
		{[]string{"-sources.poll", "-1s"}, "-sources.poll is negative"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out); code != 2 || !strings.Contains(out.String(), tc.want) || strings.Contains(out.String(), "Config.") {
			t.Errorf("%q: exit %d, output %q; want 2 and %q", tc.args, code, out.String(), tc.want)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"-geo.country", "/nonexistent.mmdb", "-metrics.addr", ""}, &out); code != 1 || !strings.Contains(out.String(), "/nonexistent.mmdb") {
		t.Errorf("missing data file: exit %d, %q; want 1 naming the file", code, out.String())
	}
}

// TestReadyAndProbe: /readyz answers 200 once the binary reaches Kafka,
// and -probe says so with exit 0 (1 for a URL that does not answer).
func TestReadyAndProbe(t *testing.T) {
	k := testenv.SharedKafka(t)
	port, err := iproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	in := testenv.UniqueName(t)
	k.CreateTopic(t, in, 1)
	p := startBinary(t, append(kafkaArgs(k.Brokers(), in, in+"-out", "g", "ready"), "-metrics.addr", fmt.Sprintf("127.0.0.1:%d", port))...)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 200 within 30s (last %v)", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out bytes.Buffer
	if code := run([]string{"-probe", url}, &out); code != 0 {
		t.Errorf("-probe %s: exit %d, %s", url, code, out.String())
	}
	p.term(t)
	if code := run([]string{"-probe", url}, &out); code != 1 {
		t.Errorf("-probe after exit: %d, want 1", code)
	}
}
