// Package ports finds free TCP ports on the loopback interface.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Free returns n distinct TCP ports on 127.0.0.1 that were free a moment
// ago, none handed out before by this process: two callers that have not
// yet bound theirs (the regions of one campaign) never get the same one.
//
// They are picked below the kernel's ephemeral range when it can tell it:
// ports bound by ":0" come from that range, and so do the source ports of
// every outgoing connection, so a port found free there can be taken as a
// source port before the server that was meant to listen on it starts (or
// restarts) — which happened under parallel tests.
func Free(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo := ephemeralStart()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		addr := "127.0.0.1:0"
		if lo > 11000 && tries < 50*n {
			addr = fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(lo-10000))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				return nil, err
			}
			continue
		}
		ls = append(ls, l)
		p := l.Addr().(*net.TCPAddr).Port
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// handedOut holds every port Free returned in this process. (Process-wide
// on purpose: the callers that must not collide do not know each other.)
var handedOut sync.Map

// ephemeralStart is the first port of the kernel's ephemeral range, 0 if unknown.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}
