package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/gossip"
)

func startGossip(o edge.Options, bind, seeds, keyFile, profile, admin string, proof []byte, log *slog.Logger) (*gossip.Cluster, error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("-gossip %q: %w", bind, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("-gossip %q: %w", bind, err)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	prof := gossip.Fast
	switch profile {
	case "fast":
	case "lan":
		prof = gossip.LAN
	default:
		return nil, fmt.Errorf("-gossip-profile %q: want fast or lan", profile)
	}
	var seedList []string
	if seeds != "" {
		seedList = strings.Split(seeds, ",")
	}
	return gossip.Start(gossip.Options{
		Name: o.Name, BindAddr: host, BindPort: p, Seeds: seedList, Key: key, Profile: prof, Proof: proof,
		Meta:   gossip.Meta{Region: o.Region, Role: "edge", Admin: admin, Version: "dev"},
		Logger: log.With("component", "gossip"),
	})
}

// ownershipLog keeps the most recent ownership events for /status.
type ownershipLog struct {
	mu     sync.Mutex
	events []edge.OwnershipEvent
}

func (l *ownershipLog) add(e edge.OwnershipEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if len(l.events) > 256 {
		l.events = l.events[len(l.events)-256:]
	}
}

func (l *ownershipLog) list() []edge.OwnershipEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]edge.OwnershipEvent(nil), l.events...)
}

func statusHandler(c *edge.Consumer, g *gossip.Cluster, l *ownershipLog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := edge.Status{Name: c.Name(), Owned: c.Owned(), Stats: c.Stats(), Ownership: l.list()}
		if g != nil {
			s.Members = g.Names()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
}

// watchMembership logs membership events and exports them as metrics.
func watchMembership(g *gossip.Cluster, o edge.Options, log *slog.Logger) {
	o.Metrics.Members.WithLabelValues(o.Region).Set(float64(len(g.Names())))
	for e := range g.Subscribe() {
		o.Metrics.MembershipEvents.WithLabelValues(o.Region, e.Kind.String()).Inc()
		o.Metrics.Members.WithLabelValues(o.Region).Set(float64(len(g.Names())))
		log.Info("membership", "event", e.Kind.String(), "member", e.Member.Name, "role", e.Member.Meta.Role, "members", len(g.Names()))
	}
}
