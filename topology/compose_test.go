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
	}
	// The compose deployment stands by for ap-south in us-east (the
	// default topology has no standby: the simulation adds one for its
	// region-loss drill), so that the drill runner can lose a region.
	standby := map[string]string{"ap-south": "us-east"}
	for _, r := range top.Regions {
		if r.Standby != "" {
			standby[r.Name] = r.Standby
		}
	}
	for r, s := range standby {
		in := func(service string, flags ...string) {
			b := serviceBlock(f, service)
			if b == "" {
				t.Errorf("docker-compose.multiregion.yml lacks service %s (%s stands by for %s)", service, s, r)
			}
			for _, fl := range flags {
				if b != "" && !strings.Contains(b, fl) {
					t.Errorf("service %s lacks %s (%s stands by for %s)", service, fl, s, r)
				}
			}
		}
		in("core-"+s, fmt.Sprintf("\"-standby-for=%s\"", r), "\"-failover-after=")
		in("core-"+r, fmt.Sprintf("\"-standby=%s\"", s))
		reg, _ := top.Region(r)
		for i := range reg.Edges {
			in(fmt.Sprintf("edge-%s-%d", r, i+1), fmt.Sprintf("\"-standby=%s\"", s), "\"-isolated-after=")
		}
		in(fmt.Sprintf("edge-%s-failover-%s", s, r), fmt.Sprintf("\"-failover-of=%s\"", r), fmt.Sprintf("\"-region=%s\"", s),
			fmt.Sprintf("\"-nats-user=failover-%s\"", s))
		in("drill", fmt.Sprintf("/ledgers/%s/failover-%s:ro", r, s)) // its runs count as r's
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

// serviceBlock returns service's definition in the compose file f (its
// lines up to the next service), or "" if it has none.
func serviceBlock(f, service string) string {
	_, rest, ok := strings.Cut(f, "\n  "+service+":\n")
	if !ok {
		return ""
	}
	end := len(rest)
	for i := 0; i+3 < len(rest); i++ {
		if rest[i] == '\n' && rest[i+1] == ' ' && rest[i+2] == ' ' && rest[i+3] != ' ' && rest[i+3] != '#' {
			end = i
			break
		}
	}
	return rest[:end]
}
