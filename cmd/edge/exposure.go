package main

import (
	"log/slog"
	"net"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/exposure"
)

// refuseExposed exits when gossip or the admin port would listen beyond
// loopback without the gossip key or the admin token and without -insecure
// (protected mode, package exposure), and logs what an exposed edge lacks
// otherwise. It reads the key and the token as the edge does later.
func refuseExposed(log *slog.Logger, gossipBind, gossipKeyFile, admin, adminTokenFile string, adminTLS, insecure bool) {
	var keyed, tokened bool
	if gossipBind != "" {
		key, err := readKey(gossipKeyFile)
		if err != nil {
			cli.Fatal(log, "gossip", err)
		}
		keyed = key != nil
	}
	if admin != "" {
		token, err := cli.Secret(adminTokenFile, "ONCEPLANE_ADMIN_TOKEN")
		if err != nil {
			cli.Fatal(log, "admin token", err)
		}
		tokened = token != ""
	}
	if err := cli.CheckExposure(log, insecure, listeners(gossipBind, keyed, admin, tokened, adminTLS)...); err != nil {
		cli.Fatal(log, "refusing to start", err)
	}
}

// listeners are the edge's listeners, those of its flags that are set:
// gossip (protected by the encryption key, which also authenticates every
// message) and the admin HTTP port (protected by the bearer token, which
// travels in plain HTTP unless the port serves TLS: a weak point when
// exposed).
func listeners(gossipBind string, keyed bool, admin string, tokened, adminTLS bool) []exposure.Listener {
	var ls []exposure.Listener
	if gossipBind != "" {
		ls = append(ls, exposure.Listener{Name: "gossip (-gossip)", Addr: gossipAddr(gossipBind), Protected: keyed,
			Missing: "no encryption key: anyone who reaches it can join the membership and take partitions over (add -gossip-key-file FILE or ONCEPLANE_GOSSIP_KEY)"})
	}
	if admin != "" {
		l := exposure.Listener{Name: "admin HTTP (-admin)", Addr: admin, Protected: tokened,
			Missing: "no token: anyone who reaches it reads /metrics and /status (add -admin-token-file FILE or ONCEPLANE_ADMIN_TOKEN)"}
		if !adminTLS {
			l.Weak = []string{"plain HTTP: the bearer token crosses the network unencrypted (add -admin-tls-cert and -admin-tls-key)"}
		}
		ls = append(ls, l)
	}
	return ls
}

// gossipAddr is where -gossip binds: package gossip binds an empty host to
// 127.0.0.1, unlike net.Listen.
func gossipAddr(bind string) string {
	if host, port, err := net.SplitHostPort(bind); err == nil && host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return bind
}
