package core_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestPeersAuthenticate: with a peer password, a route or a gateway from a
// node that does not know it is refused. Two nodes of a region form it; a
// third, with another password, dials both, is refused (they log the
// authentication error), is never routed to them and never sees a meta
// leader. Likewise a region dialing another's gateway with the wrong
// password. A region with the right password joins by
// gateway; one with another password is never connected.
func TestPeersAuthenticate(t *testing.T) {
	ports := coretest.FreePorts(t, 3+3+3)
	var routes []string
	for _, p := range ports[:3] {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", p))
	}
	good := routes[:2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &errorLog{}
	start := func(ctx context.Context, o core.Options) (*core.Node, error) {
		o.Port, o.DataDir, o.MaxMemory, o.MaxStore = -1, t.TempDir(), 64<<20, 1<<30
		o.Logger = slog.New(logs.handler(o.Name))
		return core.Start(ctx, o)
	}
	type result struct {
		n   *core.Node
		err error
	}
	res := make([]chan result, 3)
	for i := range 3 {
		res[i] = make(chan result, 1)
		pw, rs := "right", good
		if i == 2 {
			pw, rs = "wrong", routes
		}
		sctx := ctx
		if i == 2 {
			var c context.CancelFunc
			sctx, c = context.WithTimeout(ctx, 8*time.Second)
			defer c()
		}
		go func() {
			n, err := start(sctx, core.Options{Name: fmt.Sprintf("r-%d", i), Region: "guarded", ClusterPort: ports[i], Routes: rs, PeerPassword: pw})
			res[i] <- result{n, err}
		}()
	}
	var nodes []*core.Node
	for i := range 3 {
		r := <-res[i]
		if r.n != nil {
			defer r.n.Shutdown()
		}
		switch {
		case i < 2 && r.err != nil:
			t.Fatalf("node %d with the right password: %v", i, r.err)
		case i == 2 && r.err == nil:
			t.Fatal("the node with the wrong password joined the region's JetStream")
		}
		nodes = append(nodes, r.n)
	}
	for _, name := range []string{"r-0", "r-1"} {
		coretest.Eventually(t, 10*time.Second, name+" refuses r-2's route", func() bool {
			return logs.has(name, "rid:", "authentication error")
		})
	}
	for i, n := range nodes[:2] {
		if got := n.Server().NumRoutes(); got == 0 {
			t.Errorf("node %d has no route to its good peer", i)
		}
		rz, _ := n.Server().Routez(nil)
		for _, r := range rz.Routes {
			if r.RemoteName == "r-2" {
				t.Errorf("node %d routes to the node with the wrong password", i)
			}
		}
	}

	// Gateways: one-node regions ga and gb dial each other; gc, with
	// another password, dials both.
	gw, cl := ports[3:6], ports[6:]
	regions := []string{"ga", "gb", "gc"}
	gnodes := make([]*core.Node, 3)
	errs := make(chan error, 3)
	for i, r := range regions {
		var gws []core.Gateway
		for j, o := range regions {
			if j != i && o != "gc" {
				gws = append(gws, core.Gateway{Name: o, URLs: []string{fmt.Sprintf("127.0.0.1:%d", gw[j])}})
			}
		}
		pw := "right"
		if r == "gc" {
			pw = "wrong"
		}
		go func() {
			within := 20 * time.Second
			if r == "gc" {
				within = 5 * time.Second // it will not get a meta leader
			}
			sctx, c := context.WithTimeout(ctx, within)
			defer c()
			// A one-node region routes to itself (JetStream clustering).
			self := []string{fmt.Sprintf("127.0.0.1:%d", cl[i])}
			n, err := start(sctx, core.Options{Name: r, Region: r, ClusterPort: cl[i], Routes: self, GatewayPort: gw[i], Gateways: gws,
				GatewayAdvertise: core.NoAdvertise, PeerPassword: pw})
			gnodes[i] = n
			errs <- err
		}()
	}
	for range regions {
		<-errs // gc may not get a meta leader: what matters is who is connected
	}
	for _, n := range gnodes {
		if n != nil {
			defer n.Shutdown()
		}
	}
	if gnodes[0] == nil || gnodes[1] == nil {
		t.Fatal("regions with the right password did not start")
	}
	inbound := func(n *core.Node) map[string]bool {
		z, _ := n.Server().Gatewayz(&server.GatewayzOptions{})
		out := map[string]bool{}
		for name, cs := range z.InboundGateways {
			if len(cs) > 0 {
				out[name] = true
			}
		}
		return out
	}
	coretest.Eventually(t, 20*time.Second, "ga and gb connected both ways", func() bool {
		return inbound(gnodes[0])["gb"] && inbound(gnodes[1])["ga"]
	})
	for _, name := range []string{"ga", "gb"} {
		coretest.Eventually(t, 10*time.Second, name+" refuses gc's gateway", func() bool {
			return logs.has(name, "gid:", "authentication error")
		})
	}
	for i, n := range gnodes[:2] {
		if inbound(n)["gc"] {
			t.Errorf("%s accepted a gateway from gc, which has the wrong password", regions[i])
		}
	}
}

// errorLog keeps the error-level messages of several nodes.
type errorLog struct {
	mu   sync.Mutex
	msgs map[string][]string
}

func (l *errorLog) handler(node string) slog.Handler {
	return &errorHandler{l: l, node: node}
}

// has reports whether node logged an error containing every one of parts.
func (l *errorLog) has(node string, parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, m := range l.msgs[node] {
		for _, p := range parts {
			if !strings.Contains(strings.ToLower(m), strings.ToLower(p)) {
				continue next
			}
		}
		return true
	}
	return false
}

type errorHandler struct {
	l    *errorLog
	node string
}

func (h *errorHandler) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (h *errorHandler) Handle(_ context.Context, r slog.Record) error {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.l.msgs == nil {
		h.l.msgs = map[string][]string{}
	}
	h.l.msgs[h.node] = append(h.l.msgs[h.node], r.Message)
	return nil
}
func (h *errorHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorHandler) WithGroup(string) slog.Handler      { return h }
