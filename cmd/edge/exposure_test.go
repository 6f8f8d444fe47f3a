package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/internal/exposure"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
)

func TestListeners(t *testing.T) {
	_, err := exposure.Check(listeners("0.0.0.0:7946", false, ":9222", false, false), false)
	var refused *exposure.RefusedError
	if !errors.As(err, &refused) || len(refused.Listeners) != 2 ||
		refused.Listeners[0].Name != "gossip (-gossip)" || refused.Listeners[1].Name != "admin HTTP (-admin)" {
		t.Fatalf("open edge: %v, want gossip and admin refused", err)
	}
	ws, err := exposure.Check(listeners("0.0.0.0:7946", true, ":9222", true, false), false)
	if err != nil || len(ws) != 1 || ws[0].Listener != "admin HTTP (-admin)" || ws[0].Unprotected {
		t.Fatalf("key and token: %+v, %v; want the plain-HTTP warning only", ws, err)
	}
	if ws, err := exposure.Check(listeners("0.0.0.0:7946", true, ":9222", true, true), false); err != nil || len(ws) != 0 {
		t.Fatalf("key, token and admin TLS: %+v, %v; want no warning", ws, err)
	}
	// Package gossip binds an empty host to loopback; net.Listen does not.
	if ls := listeners(":7946", false, "", false, false); len(ls) != 1 || ls[0].Addr != "127.0.0.1:7946" || exposure.Exposed(ls[0].Addr) {
		t.Errorf("-gossip :7946: %+v, want loopback", ls)
	}
	if ls := listeners("", false, "", false, false); len(ls) != 0 {
		t.Errorf("gossip and admin off: %+v", ls)
	}
	if ws, err := exposure.Check(listeners("127.0.0.1:7946", false, "localhost:9222", false, false), false); err != nil || len(ws) != 0 {
		t.Errorf("loopback: %+v, %v", ws, err)
	}
}

// TestProtectedMode runs the edge binary: gossip beyond loopback without a
// key and the admin port beyond loopback without a token refuse to start;
// -insecure starts them, logging each at error level; loopback starts.
func TestProtectedMode(t *testing.T) {
	// What a developer's shell sets must not change what is tested.
	t.Setenv("ONCEPLANE_GOSSIP_KEY", "")
	t.Setenv("ONCEPLANE_ADMIN_TOKEN", "")
	bin, err := proc.Build("../..", t.TempDir(), "./cmd/edge")
	if err != nil {
		t.Fatal(err)
	}
	// No core: a refusal comes before connecting.
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"gossip without key", []string{"-gossip", "0.0.0.0:0"},
			[]string{"gossip (-gossip) on 0.0.0.0:0: no encryption key", "-gossip-key-file FILE or ONCEPLANE_GOSSIP_KEY"}},
		{"admin without token", []string{"-admin", "0.0.0.0:0"},
			[]string{"admin HTTP (-admin) on 0.0.0.0:0: no token", "-admin-token-file FILE or ONCEPLANE_ADMIN_TOKEN"}},
		{"admin on every interface", []string{"-admin", ":0"},
			[]string{"admin HTTP (-admin) on :0: no token"}},
		{"both, IPv6", []string{"-gossip", "[::]:0", "-admin", "[2001:db8::1]:0"},
			[]string{"gossip (-gossip) on [::]:0", "admin HTTP (-admin) on [2001:db8::1]:0"}},
		{"a key does not cover the admin port", []string{"-gossip", "0.0.0.0:0", "-gossip-key-file", keyFile(t), "-admin", "0.0.0.0:0"},
			[]string{"admin HTTP (-admin) on 0.0.0.0:0: no token"}},
	} {
		t.Run("refused: "+c.name, func(t *testing.T) {
			out, code := runToExit(t, bin, append([]string{"-nats", "nats://127.0.0.1:1"}, c.args...)...)
			if code == 0 {
				t.Fatalf("exit 0, want a refusal:\n%s", out)
			}
			for _, want := range append(c.want, "refusing to start", "-insecure") {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	node := coretest.Start(t)
	_, js := coretest.Connect(t, node.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Provision(ctx, js, streams.Config{Partitions: 2, Window: time.Hour, Memory: true}); err != nil {
		t.Fatal(err)
	}
	start := func(t *testing.T, admin string, args ...string) string {
		t.Helper()
		dir := t.TempDir()
		args = append([]string{"-nats", node.ClientURL(), "-name", "e", "-window", "1h", "-sink", "ledger",
			"-ledger", filepath.Join(dir, "ledger.jsonl"), "-admin", admin}, args...)
		p, err := proc.Start("edge", filepath.Join(dir, "edge.log"), bin, args...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := p.Stop(10 * time.Second); err != nil {
				t.Logf("stop edge: %v", err)
			}
		})
		host, port, _ := strings.Cut(admin, ":")
		if host == "0.0.0.0" {
			host = "127.0.0.1"
		}
		url := "http://" + host + ":" + port + "/healthz"
		c := http.Client{Timeout: time.Second}
		if !poll.Until(30*time.Second, func() bool {
			if p.Exited() {
				return true
			}
			resp, err := c.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}) || p.Exited() {
			t.Fatalf("edge not serving %s:\n%s", url, p.Output())
		}
		return p.Output()
	}

	t.Run("insecure starts and says so", func(t *testing.T) {
		admin := fmt.Sprintf("0.0.0.0:%d", freePort(t))
		out := start(t, admin, "-gossip", "0.0.0.0:0", "-insecure")
		for _, want := range []string{
			`level=ERROR msg="INSECURE: listening beyond loopback without protection (-insecure)" listener="gossip (-gossip)" addr=0.0.0.0:0 missing="no encryption key`,
			`level=ERROR msg="INSECURE: listening beyond loopback without protection (-insecure)" listener="admin HTTP (-admin)" addr=` + admin + ` missing="no token`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("key and token start beyond loopback", func(t *testing.T) {
		t.Setenv("ONCEPLANE_ADMIN_TOKEN", "a-token")
		admin := fmt.Sprintf("0.0.0.0:%d", freePort(t))
		out := start(t, admin, "-gossip", "0.0.0.0:0", "-gossip-key-file", keyFile(t))
		if strings.Contains(out, "INSECURE") || !strings.Contains(out, `weakness="plain HTTP`) {
			t.Errorf("want the plain-HTTP warning only:\n%s", out)
		}
	})

	t.Run("loopback starts quietly", func(t *testing.T) {
		ps := freePorts(t, 2)
		out := start(t, fmt.Sprintf("127.0.0.1:%d", ps[0]), "-gossip", fmt.Sprintf("127.0.0.1:%d", ps[1]))
		if strings.Contains(out, "beyond loopback") {
			t.Errorf("loopback edge warned:\n%s", out)
		}
	})
}

func keyFile(t *testing.T) string {
	t.Helper()
	return writeFile(t, "gossip.key", strings.Repeat("ab", 32))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int { return freePorts(t, 1)[0] }

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ps, err := ports.Free(n)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// runToExit runs bin, which must exit within 30 s, and returns its output
// and exit code.
func runToExit(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, code, err := proc.RunToExit(30*time.Second, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out, code
}
