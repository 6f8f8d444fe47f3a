package topology_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/onceplane/onceplane/internal/exposure"
)

// TestComposeFileIsProtected keeps docker-compose.multiregion.yml startable
// under the commands' protected mode (package exposure) without -insecure:
// every core listening beyond loopback has -credentials, every edge's
// exposed gossip has its key and exposed admin port its token, and no WAN
// proxy's control port (which has no authentication) is exposed.
func TestComposeFileIsProtected(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.multiregion.yml")
	if err != nil {
		t.Fatal(err)
	}
	f := string(b)
	if strings.Contains(f, "-insecure") {
		t.Error("docker-compose.multiregion.yml passes -insecure")
	}
	_, services, _ := strings.Cut(f, "\nservices:\n")
	services, _, _ = strings.Cut(services, "\nnetworks:")
	flagRE := regexp.MustCompile(`-([a-z][a-z-]*)=([^"\s,\]]*)`)
	checked := map[string]int{}
	services = "\n" + services
	heads := regexp.MustCompile(`\n  ([a-z0-9-]+):\n`).FindAllStringSubmatchIndex(services, -1)
	for i, h := range heads {
		name, end := services[h[2]:h[3]], len(services)
		if i+1 < len(heads) {
			end = heads[i+1][0]
		}
		block := services[h[1]:end]
		flags := map[string]string{}
		for _, m := range flagRE.FindAllStringSubmatch(block, -1) {
			flags[m[1]] = m[2]
		}
		value := func(flag, def string) string {
			if v, ok := flags[flag]; ok {
				return v
			}
			return def
		}
		switch {
		case strings.Contains(block, "- \"/core\"\n"):
			if exposure.Exposed(value("host", "127.0.0.1")) && flags["credentials"] == "" {
				t.Errorf("core service %s listens on %s without -credentials", name, flags["host"])
			}
			checked["core"]++
		case strings.Contains(block, "- \"/edge\"\n"):
			if g := flags["gossip"]; g != "" && exposure.Exposed(g) && flags["gossip-key-file"] == "" {
				t.Errorf("edge service %s gossips on %s without -gossip-key-file", name, g)
			}
			if a := value("admin", "127.0.0.1:9222"); a != "" && exposure.Exposed(a) && flags["admin-token-file"] == "" {
				t.Errorf("edge service %s serves admin on %s without -admin-token-file", name, a)
			}
			checked["edge"]++
		case strings.Contains(block, "[/wanproxy,"):
			if c := flags["control"]; c != "" && exposure.Exposed(c) {
				t.Errorf("wanproxy service %s has its unauthenticated control port on %s", name, c)
			}
			checked["wanproxy"]++
		}
	}
	if checked["core"] != 3 || checked["edge"] != 7 || checked["wanproxy"] != 6 {
		t.Errorf("checked %v services, want 3 cores, 7 edges (2 per region, 1 failover edge) and 6 WAN proxies", checked)
	}
}
