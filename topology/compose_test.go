package topology_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/topology"
)

// TestComposeFileMatchesDefault keeps docker-compose.multiregion.yml the
// default topology: a core and the edges of every region, a WAN proxy per
// direction of every link with its delay and jitter, the partition count
// and window, and the development certificate valid for every name the
// cores are dialed by.
func TestComposeFileMatchesDefault(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.multiregion.yml")
	if err != nil {
		t.Fatal(err)
	}
	f := string(b)
	top := topology.Default()
	want := []string{
		fmt.Sprintf("-partitions=%d", top.Partitions),
		fmt.Sprintf("-window=%v", strings.TrimSuffix(strings.TrimSuffix(time.Duration(top.Window).String(), "0s"), "0m")),
	}
	var hosts []string
	for _, r := range top.Regions {
		want = append(want, "\n  core-"+r.Name+":\n")
		hosts = append(hosts, "core-"+r.Name)
		for i := range r.Edges {
			want = append(want, fmt.Sprintf("\n  edge-%s-%d:\n", r.Name, i+1))
		}
		if r.Standby != "" {
			want = append(want, fmt.Sprintf("\n  core-%s:\n", r.Standby), fmt.Sprintf("\"-standby-for=%s\"", r.Name))
		}
	}
	for _, l := range top.Links {
		for _, d := range [][2]string{{l.A, l.B}, {l.B, l.A}} {
			name := "wan-" + d[0] + "-" + d[1]
			hosts = append(hosts, name)
			want = append(want, fmt.Sprintf("  %s:\n    <<: *service\n    networks: [%s, %s]\n", name, d[0], d[1]),
				fmt.Sprintf("-name=%s, -listen=0.0.0.0:7222, -target=core-%s:7222, -delay=%dms, -jitter=%dms,",
					name, d[1], time.Duration(l.RTT).Milliseconds()/2, time.Duration(l.Jitter).Milliseconds()))
		}
	}
	for _, w := range want {
		if !strings.Contains(f, w) {
			t.Errorf("docker-compose.multiregion.yml lacks %q", w)
		}
	}
	_, line, _ := strings.Cut(f, "-hosts=")
	line, _, _ = strings.Cut(line, "\n")
	certHosts := map[string]bool{}
	for _, h := range strings.Split(line, ",") {
		certHosts[h] = true
	}
	for _, h := range hosts {
		if !certHosts[h] {
			t.Errorf("the development certificate (-hosts=) lacks %s", h)
		}
	}
}
