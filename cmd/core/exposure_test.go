package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/internal/exposure"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
)

func TestListeners(t *testing.T) {
	open := core.Options{Host: "0.0.0.0", Port: 4222, ClusterPort: 6222, GatewayPort: 7222, MonitorPort: 8222}
	_, err := exposure.Check(listeners(open), false)
	var refused *exposure.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("open node: err = %v, want a refusal", err)
	}
	var names []string
	for _, l := range refused.Listeners {
		names = append(names, l.Name+" "+l.Addr)
	}
	if got, want := strings.Join(names, ", "), "client (-host, -port) 0.0.0.0:4222, route (-host, -cluster-port) 0.0.0.0:6222, gateway (-host, -gateway-port) 0.0.0.0:7222"; got != want {
		t.Errorf("refused %s, want %s", got, want)
	}

	// Credentials protect client, route and gateway; without TLS they are
	// plain text, and monitoring is unauthenticated: warnings only.
	secured := open
	secured.Users, secured.PeerPassword = []*server.User{{Username: "admin"}}, "peer"
	ws, err := exposure.Check(listeners(secured), false)
	if err != nil || len(ws) != 3 {
		t.Fatalf("credentials: %+v, %v; want 3 warnings (plain text; monitoring is on loopback)", ws, err)
	}
	for _, w := range ws {
		if w.Unprotected {
			t.Errorf("credentials: %+v is unprotected", w)
		}
	}
	secured.TLS.CertFile = "cert.pem"
	ws, err = exposure.Check(listeners(secured), false)
	if err != nil || len(ws) != 0 {
		t.Fatalf("credentials and TLS, monitoring on loopback (the default): %+v, %v; want no warning", ws, err)
	}
	secured.MonitorHost = "0.0.0.0"
	ws, err = exposure.Check(listeners(secured), false)
	if err != nil || len(ws) != 1 || !strings.HasPrefix(ws[0].Listener, "monitoring") {
		t.Fatalf("credentials and TLS, monitoring exposed: %+v, %v; want the monitoring warning only", ws, err)
	}

	// Users without a peer password leave routes and gateways open.
	half := open
	half.Users = secured.Users
	if _, err := exposure.Check(listeners(half), false); !errors.As(err, &refused) || len(refused.Listeners) != 2 {
		t.Errorf("users without peer password: %v, want route and gateway refused", err)
	}

	// A gateway node is clustered on a free route port.
	ls := listeners(core.Options{Host: "10.0.0.1", GatewayPort: 7222})
	if len(ls) != 3 || ls[0].Addr != "10.0.0.1:4222" || ls[1].Addr != "10.0.0.1:any" {
		t.Errorf("gateway node listeners %+v", ls)
	}

	// Loopback and the default host are never refused nor warned about.
	for _, host := range []string{"", "127.0.0.1", "::1", "localhost"} {
		o := open
		o.Host = host
		if ws, err := exposure.Check(listeners(o), false); err != nil || len(ws) != 0 {
			t.Errorf("host %q: %+v, %v", host, ws, err)
		}
	}
}

// TestProtectedMode runs the core binary: beyond loopback it refuses to
// start without -credentials, and starts with -insecure, logging each open
// listener at error level.
func TestProtectedMode(t *testing.T) {
	bin, err := proc.Build("../..", t.TempDir(), "./cmd/core")
	if err != nil {
		t.Fatal(err)
	}
	free := func(n int) []int {
		ps, err := ports.Free(n)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}

	for _, host := range []string{"0.0.0.0", "::", "core.example"} {
		t.Run("refused on "+host, func(t *testing.T) {
			ps := free(4)
			out, code := runToExit(t, bin, "-host", host, "-port", fmt.Sprint(ps[0]), "-cluster-port", fmt.Sprint(ps[1]),
				"-gateway-port", fmt.Sprint(ps[2]), "-monitor-port", fmt.Sprint(ps[3]), "-data", t.TempDir(), "-no-provision")
			if code == 0 {
				t.Fatalf("exit 0, want a refusal:\n%s", out)
			}
			for _, want := range []string{
				"refusing to start",
				"client (-host, -port) on " + net.JoinHostPort(host, fmt.Sprint(ps[0])),
				"route (-host, -cluster-port) on " + net.JoinHostPort(host, fmt.Sprint(ps[1])),
				"gateway (-host, -gateway-port) on " + net.JoinHostPort(host, fmt.Sprint(ps[2])),
				"add -credentials DIR", "-insecure",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "monitoring") {
				t.Errorf("monitoring (read-only) refused:\n%s", out)
			}
		})
	}

	t.Run("insecure starts and says so", func(t *testing.T) {
		ps := free(2)
		p := startCore(t, bin, ps[0], "-host", "0.0.0.0", "-monitor-host", "0.0.0.0", "-monitor-port", fmt.Sprint(ps[1]), "-insecure")
		out := p.Output()
		for _, want := range []string{
			`level=ERROR msg="INSECURE: listening beyond loopback without protection (-insecure)" listener="client (-host, -port)" addr=0.0.0.0:` + fmt.Sprint(ps[0]) + ` missing="no authentication: anyone who reaches it`,
			`level=WARN msg="listening beyond loopback with a weak point" listener="client (-host, -port)" addr=0.0.0.0:` + fmt.Sprint(ps[0]) + ` weakness="plain text`,
			`level=WARN msg="listening beyond loopback with a weak point" listener="monitoring (-monitor-host, -monitor-port)" addr=0.0.0.0:` + fmt.Sprint(ps[1]) + ` weakness="no authentication (NATS monitoring has none`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("credentials start beyond loopback", func(t *testing.T) {
		ps := free(1)
		p := startCore(t, bin, ps[0], "-host", "0.0.0.0", "-credentials", t.TempDir(), "-generate-credentials")
		out := p.Output()
		if strings.Contains(out, "INSECURE") || !strings.Contains(out, `weakness="plain text`) {
			t.Errorf("want the plain-text warning only:\n%s", out)
		}
	})

	t.Run("loopback default starts quietly", func(t *testing.T) {
		ps := free(1)
		p := startCore(t, bin, ps[0])
		if out := p.Output(); strings.Contains(out, "beyond loopback") {
			t.Errorf("loopback node warned:\n%s", out)
		}
	})
}

// startCore starts the core binary on client port port and waits for the
// port to accept connections; the node is stopped when the test ends.
func startCore(t *testing.T, bin string, port int, args ...string) *proc.Proc {
	t.Helper()
	dir := t.TempDir()
	args = append([]string{"-port", fmt.Sprint(port), "-data", filepath.Join(dir, "data"), "-no-provision"}, args...)
	p, err := proc.Start("core", filepath.Join(dir, "core.log"), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Logf("stop core: %v", err)
		}
	})
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	if !poll.Until(30*time.Second, func() bool {
		if p.Exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) || p.Exited() {
		t.Fatalf("core not listening on %s:\n%s", addr, p.Output())
	}
	return p
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
