package main

import (
	"log/slog"
	"net"
	"strconv"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/exposure"
)

// refuseExposed exits when the node would listen beyond loopback without
// -credentials and without -insecure (protected mode, package exposure),
// and logs what an exposed node lacks otherwise.
func refuseExposed(log *slog.Logger, o core.Options, insecure bool, metricsAddr string) {
	ls := listeners(o)
	if metricsAddr != "" {
		ls = append(ls, exposure.Listener{Name: "metrics (-metrics-addr)", Addr: metricsAddr, Protected: true,
			Weak: []string{"no authentication: anyone who reaches it reads the replication metrics"}})
	}
	if err := cli.CheckExposure(log, insecure, ls...); err != nil {
		cli.Fatal(log, "refusing to start", err)
	}
}

// listeners are the node's listeners as core.Start binds them: client,
// route and gateway on Host, monitoring on MonitorHost. -credentials protects the
// first three: Users authenticate clients, PeerPassword routes and
// gateways. Plain text on them is a weak point. NATS monitoring has no
// authentication: when exposed it is only a weak point, as it serves reads.
func listeners(o core.Options) []exposure.Listener {
	host := o.Host
	if host == "" {
		host = "127.0.0.1" // core.Options' default
	}
	var weak []string
	if o.TLS.CertFile == "" {
		weak = []string{"plain text: events and credentials cross the network unencrypted (add -tls-cert, -tls-key and -tls-ca)"}
	}
	listener := func(name string, port int, authenticated bool, anyone string) exposure.Listener {
		return exposure.Listener{Name: name, Addr: addr(host, port), Protected: authenticated, Weak: weak,
			Missing: "no authentication: " + anyone + " (add -credentials DIR)"}
	}
	port := o.Port
	if port == 0 {
		port = 4222 // core.Options' default
	}
	ls := []exposure.Listener{listener("client (-host, -port)", port, len(o.Users) > 0, "anyone who reaches it can publish, read, and create or delete streams")}
	if o.ClusterPort != 0 || o.GatewayPort != 0 {
		// A gateway node is always clustered (core.Options.GatewayPort).
		ls = append(ls, listener("route (-host, -cluster-port)", o.ClusterPort, o.PeerPassword != "", "any server that reaches it can join the region as a route"))
	}
	if o.GatewayPort != 0 {
		ls = append(ls, listener("gateway (-host, -gateway-port)", o.GatewayPort, o.PeerPassword != "", "any server that reaches it can join the supercluster as a region"))
	}
	if o.MonitorPort != 0 {
		mh := o.MonitorHost
		if mh == "" {
			mh = "127.0.0.1" // core.Options' default
		}
		ls = append(ls, exposure.Listener{Name: "monitoring (-monitor-host, -monitor-port)", Addr: addr(mh, o.MonitorPort), Protected: true,
			Weak: []string{"no authentication (NATS monitoring has none, even with -credentials): anyone who reaches it reads server, connection, account and stream details"}})
	}
	return ls
}

// addr is host:port, with "any" for a port picked at start (0 or -1).
func addr(host string, port int) string {
	p := strconv.Itoa(port)
	if port <= 0 {
		p = "any"
	}
	return net.JoinHostPort(host, p)
}
