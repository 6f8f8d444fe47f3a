package regionwatch

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/streams"
)

// Heard returns region here's view of each of its peers: for how long its
// replication of the peer's claim log (here's xclaims sources, which hear
// the peer's messages or its heartbeats every second) has heard nothing.
// Observer names the peer. A peer is not answered when here's xclaims
// stream cannot be read or does not source it.
func Heard(ctx context.Context, js jetstream.JetStream, here streams.Names, peers []string) []View {
	views := make([]View, len(peers))
	info, ok := streamInfo(ctx, js, here.XClaimShard(0))
	for i, peer := range peers {
		views[i] = sourced(peer, info, ok, streams.Names{Region: peer}.ClaimStream())
	}
	return views
}

// Isolated reports whether a region of a deployment of regions regions,
// given its views of the others (Heard), hears fewer of them than makes a
// majority with itself within after: the side of a cut on which the
// others may declare it lost (Lost). A view that never heard its peer
// counts as silent (Unheard gives it a time). A region whose own xclaims
// stream does not answer is not isolated: it cannot tell.
func Isolated(views []View, regions int, after time.Duration) bool {
	heard, answered := 0, false
	for _, v := range views {
		if !v.Answered {
			continue
		}
		answered = true
		if v.Silent < after {
			heard++
		}
	}
	return answered && 2*(1+heard) <= regions
}
