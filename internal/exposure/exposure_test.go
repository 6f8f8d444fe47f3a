package exposure

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestExposed(t *testing.T) {
	for _, c := range []struct {
		addr    string
		exposed bool
	}{
		// Empty hosts listen on every interface.
		{"", true},
		{":4222", true},
		{":", true},
		{":0", true},
		// Unspecified addresses.
		{"0.0.0.0", true},
		{"0.0.0.0:4222", true},
		{"::", true},
		{"[::]", true},
		{"[::]:4222", true},
		{"[::ffff:0.0.0.0]:1", true},
		// Other IPs.
		{"10.0.0.5", true},
		{"10.0.0.5:4222", true},
		{"192.168.1.1:80", true},
		{"2001:db8::1", true},
		{"[2001:db8::1]:4222", true},
		{"fe80::1%eth0", true},
		{"[fe80::1%eth0]:7946", true},
		{"[::ffff:10.0.0.1]:4222", true},
		{"128.0.0.1", true},
		// Host names: unknown without a lookup.
		{"core-us-east", true},
		{"core-us-east:4222", true},
		{"example.com:443", true},
		{"localhost.example.com", true},
		{"mylocalhost", true},
		// Forms net.Listen does not read as loopback IPs.
		{"127.1", true},
		{"127.000.000.001", true},
		{" 127.0.0.1", true},
		{"[127.0.0.1", true},
		{"::1:8080", true}, // an IPv6 address, not ::1 port 8080
		// Loopback.
		{"127.0.0.1", false},
		{"127.0.0.1:4222", false},
		{"127.0.0.1:", false},
		{"127.0.0.1:0", false},
		{"127.255.255.254:9", false},
		{"127.0.0.2:7946", false},
		{"::1", false},
		{"[::1]", false},
		{"[::1]:4222", false},
		{"[0:0:0:0:0:0:0:1]:4222", false},
		{"::ffff:127.0.0.1", false},
		{"[::ffff:127.0.0.1]:4222", false},
		{"[::1%lo]:4222", false},
		{"localhost", false},
		{"localhost:9222", false},
		{"LocalHost:9222", false},
		{"localhost.", false},
		{"localhost.:9222", false},
	} {
		if got := Exposed(c.addr); got != c.exposed {
			t.Errorf("Exposed(%q) = %v, want %v", c.addr, got, c.exposed)
		}
	}
}

func FuzzExposed(f *testing.F) {
	for _, s := range []string{"", ":4222", "0.0.0.0:1", "[::1]:2", "::1", "[::1]", "localhost:3", "[fe80::1%eth0]:4", "[", "]", "[]", "[]:", "::ffff:127.0.0.1", "%", "[%]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if Exposed(addr) {
			return
		}
		// Loopback only when the host is "localhost" or a loopback IP by
		// the standard library's own reading.
		h := host(addr)
		if strings.EqualFold(strings.TrimSuffix(h, "."), "localhost") {
			return
		}
		if i := strings.IndexByte(h, '%'); i >= 0 {
			h = h[:i]
		}
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			t.Errorf("Exposed(%q) = false, but host %q is not loopback", addr, h)
		}
	})
}

func TestCheck(t *testing.T) {
	ls := []Listener{
		{Name: "client", Addr: "0.0.0.0:4222", Missing: "no authentication: add -credentials DIR", Weak: []string{"plain text"}},
		{Name: "route", Addr: "127.0.0.1:6222", Missing: "no authentication: add -credentials DIR"},
		{Name: "admin", Addr: ":9222", Missing: "no token: add -admin-token-file FILE"},
		{Name: "gossip", Addr: "10.0.0.1:7946", Protected: true, Weak: []string{"a weak point"}},
		{Name: "monitor", Addr: "[::1]:8222", Protected: true, Weak: []string{"never seen: on loopback"}},
	}

	_, err := Check(ls, false)
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("exposed unprotected listeners: err = %v, want a *RefusedError", err)
	}
	if len(refused.Listeners) != 2 || refused.Listeners[0].Name != "client" || refused.Listeners[1].Name != "admin" {
		t.Fatalf("refused %+v, want client and admin", refused.Listeners)
	}
	for _, want := range []string{"client on 0.0.0.0:4222: no authentication: add -credentials DIR", "admin on :9222: no token: add -admin-token-file FILE", "-insecure"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "route") {
		t.Errorf("refusal %q names the loopback route", err)
	}

	ws, err := Check(ls, true)
	if err != nil {
		t.Fatalf("insecure: %v", err)
	}
	want := []Warning{
		{Listener: "client", Addr: "0.0.0.0:4222", Problem: "no authentication: add -credentials DIR", Unprotected: true},
		{Listener: "client", Addr: "0.0.0.0:4222", Problem: "plain text"},
		{Listener: "admin", Addr: ":9222", Problem: "no token: add -admin-token-file FILE", Unprotected: true},
		{Listener: "gossip", Addr: "10.0.0.1:7946", Problem: "a weak point"},
	}
	if len(ws) != len(want) {
		t.Fatalf("insecure warnings %+v, want %+v", ws, want)
	}
	for i := range want {
		if ws[i] != want[i] {
			t.Errorf("warning %d = %+v, want %+v", i, ws[i], want[i])
		}
	}

	// Protected or loopback listeners start, warning only of exposed weak points.
	ws, err = Check(ls[3:], false)
	if err != nil || len(ws) != 1 || ws[0].Listener != "gossip" {
		t.Fatalf("protected: %+v, %v", ws, err)
	}
	if ws, err := Check(nil, false); err != nil || ws != nil {
		t.Fatalf("no listeners: %+v, %v", ws, err)
	}
}
