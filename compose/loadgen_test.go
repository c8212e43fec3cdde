package compose

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestLoadgenProfile: the collect stacks have an opt-in load generator,
// service loadgen in profile loadgen, started only when asked for: the
// mocker image sending IPFIX to goflow2's NetFlow/IPFIX port inside the
// stack, after goflow2 is healthy, with a command the mocker accepts and a
// health check on its own /readyz. The mock stacks have none.
func TestLoadgenProfile(t *testing.T) {
	mockerBin := buildBinary(t, "mocker")
	accepted := acceptedFlags(t, mockerBin)
	for _, st := range stacks {
		t.Run(st.file, func(t *testing.T) {
			plain := load(t, st.file)
			if _, ok := plain.Services["loadgen"]; ok {
				t.Fatal("loadgen runs without --profile loadgen")
			}
			_, disabled := plain.DisabledServices["loadgen"]
			if st.source != "goflow2" {
				if disabled {
					t.Fatal("a mock stack has a loadgen: its mocker already is the source")
				}
				return
			}
			if !disabled {
				t.Fatal("no loadgen service (profile loadgen)")
			}
			p := load(t, st.file, "loadgen")
			svc, ok := p.Services["loadgen"]
			if !ok {
				t.Fatal("--profile loadgen does not enable loadgen")
			}
			if !slices.Equal(svc.Profiles, []string{"loadgen"}) {
				t.Errorf("profiles %v, want [loadgen]", svc.Profiles)
			}
			if want := "flow-pipeline/mocker:dev"; svc.Image != want || svc.Build == nil || svc.Build.Target != "mocker" {
				t.Errorf("image %q (build %+v), want %s built from the Dockerfile's mocker target", svc.Image, svc.Build, want)
			}
			args := []string(svc.Command)
			for _, f := range flagNames(args) {
				if !accepted[f] {
					t.Errorf("loadgen flag -%s is not a mocker flag", f)
				}
			}
			out, _ := exec.Command(mockerBin, append(slices.Clone(args), "-h")...).CombinedOutput()
			for _, bad := range []string{"flag provided but not defined", "invalid value"} {
				if strings.Contains(string(out), bad) {
					t.Errorf("the mocker rejects the loadgen command %q:\n%s", args, out)
				}
			}
			if v, _ := flagValue(args, "output"); v != "ipfix" {
				t.Errorf("-output=%q, want ipfix", v)
			}
			collector, _ := flagValue(args, "collector")
			host, port, _ := net.SplitHostPort(collector)
			listen, _ := flagValue(p.Services["goflow2"].Command, "listen")
			if host != "goflow2" || !strings.Contains(listen, "netflow://:"+port) {
				t.Errorf("-collector=%s, want goflow2's NetFlow/IPFIX listener (goflow2 -listen=%s)", collector, listen)
			}
			if dep, ok := svc.DependsOn["goflow2"]; !ok || dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on %+v, want goflow2 service_healthy", svc.DependsOn)
			}
			want := []string{"CMD", "/usr/local/bin/mocker", "-probe", "http://127.0.0.1:" + metricsPort(svc) + "/readyz"}
			if got := healthTest(svc); !slices.Equal(got, want) {
				t.Errorf("health check %q, want %q", got, want)
			}
			if svc.Restart != "no" {
				t.Errorf("restart %q, want no: with LOADGEN_COUNT it must stop once done", svc.Restart)
			}
			if len(svc.Ports) != 0 {
				t.Errorf("loadgen publishes ports %v", svc.Ports)
			}
		})
	}
}

// TestLoadgenCommandSends runs the mocker with the loadgen's command, the
// collector swapped for a local socket: it sends IPFIX (version 10).
func TestLoadgenCommandSends(t *testing.T) {
	p := load(t, "docker-compose-postgres-collect.yml", "loadgen")
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var args []string
	for _, a := range p.Services["loadgen"].Command {
		switch {
		case strings.HasPrefix(a, "-collector="):
			a = "-collector=" + conn.LocalAddr().String()
		case strings.HasPrefix(a, "-count="):
			a = "-count=50"
		case strings.HasPrefix(a, "-metrics.addr="):
			a = "-metrics.addr="
		}
		args = append(args, a)
	}
	out, err := exec.Command(buildBinary(t, "mocker"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mocker %q: %v\n%s", args, err, out)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil || n < 2 || buf[0] != 0 || buf[1] != 10 {
		t.Fatalf("read %d bytes (%v), want an IPFIX datagram: %s", n, err, fmt.Sprintf("% x", buf[:min(n, 4)]))
	}
}
