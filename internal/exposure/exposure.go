// Package exposure is the commands' protected mode: it decides whether a
// listen address is reachable from other machines, and refuses a listener
// reachable without its protection (credentials, a key, a token) unless the
// operator insists. It does no I/O.
package exposure

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Exposed reports whether a listener bound to addr (host or host:port, as
// given to net.Listen or to a server's host option) can be reached from
// other machines. An empty host (":4222", ""), an unspecified address
// (0.0.0.0, ::), any other non-loopback IP and any host name but
// "localhost" are exposed; 127.0.0.0/8, ::1, their IPv4-mapped and zoned
// forms and "localhost" are not. A host name is exposed because what it
// resolves to is unknown without a lookup.
func Exposed(addr string) bool {
	h := host(addr)
	if strings.EqualFold(strings.TrimSuffix(h, "."), "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return true
	}
	return !ip.Unmap().IsLoopback()
}

// host returns addr's host: the part before the port when addr is
// host:port, addr without brackets when it is "[v6]", else addr itself
// ("::1", "127.0.0.1", "localhost").
func host(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	if len(addr) >= 2 && addr[0] == '[' && addr[len(addr)-1] == ']' {
		return addr[1 : len(addr)-1]
	}
	return addr
}

// Listener is one network listener of a command.
type Listener struct {
	// Name says which listener it is and the flags that set it, e.g.
	// "client (-host, -port)".
	Name string
	// Addr is where it listens, as bound (host or host:port).
	Addr string
	// Protected says whether it has the protection that makes listening
	// beyond loopback acceptable: authentication, an encryption key, a token.
	Protected bool
	// Missing says, for an unprotected listener, what is missing and how
	// to add it, e.g. "no authentication: add -credentials DIR".
	Missing string
	// Weak lists lesser gaps (plain text, say) that are warned about when
	// the listener is exposed but do not refuse it.
	Weak []string
}

// Warning is what to log at start about one exposed listener.
type Warning struct {
	Listener, Addr, Problem string
	// Unprotected marks an exposed listener without its protection,
	// started only because of insecure: log it at error level. Otherwise
	// Problem is one of the listener's Weak points.
	Unprotected bool
}

// RefusedError is Check's refusal: the exposed listeners without their
// protection.
type RefusedError struct {
	Listeners []Listener
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString("reachable from other machines without protection: ")
	for i, l := range e.Listeners {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s on %s: %s", l.Name, l.Addr, l.Missing)
	}
	b.WriteString("; add the protection, bind to 127.0.0.1, or pass -insecure to start anyway")
	return b.String()
}

// Check applies protected mode to a command's listeners, in order. An
// exposed listener without its protection makes it return a *RefusedError
// naming every such listener, unless insecure is set: then each becomes an
// Unprotected warning. Every Weak point of an exposed listener is a
// warning. Listeners on loopback are not reported.
func Check(listeners []Listener, insecure bool) ([]Warning, error) {
	var (
		warnings []Warning
		refused  []Listener
	)
	for _, l := range listeners {
		if !Exposed(l.Addr) {
			continue
		}
		if !l.Protected {
			if !insecure {
				refused = append(refused, l)
				continue
			}
			warnings = append(warnings, Warning{Listener: l.Name, Addr: l.Addr, Problem: l.Missing, Unprotected: true})
		}
		for _, w := range l.Weak {
			warnings = append(warnings, Warning{Listener: l.Name, Addr: l.Addr, Problem: w})
		}
	}
	if len(refused) > 0 {
		return nil, &RefusedError{Listeners: refused}
	}
	return warnings, nil
}
