package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// The tail. Other regions' claims reach this region's xclaims stream by
// JetStream sourcing, which recovers from a WAN fault in about 2 s after
// the heal (its next heartbeat, a gap found, a retry with jitter, a consumer
// made again across the WAN). Until then a duplicate of an ID claimed over
// there during the cut is decided here as new. So while a peer's sources are
// silent, and for tailLinger after, each owned partition also reads the
// peer's claim log itself, by batch direct gets across the gateway, which
// answer as soon as the gateway is back. The records are merged in origin
// order with those the xclaims stream brings, each once (remoteCursor); the
// xclaims stream stays the path of record (a rebuild replays it).

const (
	tailEvery  = 250 * time.Millisecond
	tailSilent = time.Second      // a peer's sources silent this long: replication is suspect
	tailLinger = 10 * time.Second // tail this long after the last suspect look
	tailBatch  = 256
)

// tailOn reports whether this edge's partitions tail their peers' claim
// logs: an everyday edge in asynchronous mode with peers.
func (c *Consumer) tailOn() bool {
	return !c.o.NoTail && len(c.o.Peers) > 0 && !c.o.Strict && c.o.Host == ""
}

// peerWatch is the edge's look at its region's replication from each peer
// (the xclaims stream's sources), every tailEvery, shared by the
// partitions' tails.
type peerWatch struct {
	mu       sync.Mutex
	suspect  map[string]time.Time // peer -> when its sources were last seen silent
	server   time.Time            // this region's server time at the last look
	local    time.Time            // this edge's clock at the last look
	shards   map[string]int       // peer -> claim shard count, as the xclaims stream sources them
	shardsOK bool
}

// watchPeers keeps c.peers current until ctx ends.
func (c *Consumer) watchPeers(ctx context.Context) {
	for poll.Sleep(ctx, tailEvery) == nil {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := c.js.Stream(ictx, c.names.XClaimShard(0))
		cancel()
		if err != nil {
			continue
		}
		info := s.CachedInfo()
		now := time.Now()
		c.peers.mu.Lock()
		c.peers.server, c.peers.local = info.TimeStamp, now
		for _, peer := range c.o.Peers {
			base := streams.Names{Region: peer}.ClaimStream()
			silent := false
			for _, src := range info.Sources {
				if src == nil {
					continue
				}
				if _, ok := streams.ShardIndex(src.Name, base); ok && (src.Active < 0 || src.Active >= tailSilent) {
					silent = true
				}
			}
			if silent {
				c.peers.suspect[peer] = now
			}
		}
		c.peers.mu.Unlock()
	}
}

// tailing reports whether partitions read peer's claims themselves now, and
// this region's server time (the xclaims stream's clock: the time a tailed
// record is merged at, as if the xclaims stream had stored it now).
func (w *peerWatch) tailing(peer string) (bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.suspect[peer]
	if !ok || time.Since(at) > tailLinger || w.server.IsZero() {
		return false, time.Time{}
	}
	return true, w.server.Add(time.Since(w.local))
}

// peerShards returns peer's claim shard count (0: not sourced here), read
// once from the xclaims streams' sources.
func (c *Consumer) peerShards(ctx context.Context, peer string) int {
	c.peers.mu.Lock()
	ok := c.peers.shardsOK
	c.peers.mu.Unlock()
	if !ok {
		shards := map[string]int{}
		for _, q := range c.o.Peers {
			n, err := streams.SourcedShards(ctx, c.js, streams.Config{Names: c.names, Peers: c.o.Peers}, q)
			if err != nil {
				return 0
			}
			shards[q] = n
		}
		c.peers.mu.Lock()
		c.peers.shards, c.peers.shardsOK = shards, true
		c.peers.mu.Unlock()
	}
	c.peers.mu.Lock()
	defer c.peers.mu.Unlock()
	return c.peers.shards[peer]
}

// tail reads, while tailing says so, each peer's claims of the partition
// from where the partition has merged them (pt.tailFrom) and sends them to
// out, until ctx ends.
func (pt *partition) tail(ctx context.Context, out chan<- remoteRec) {
	c, p := pt.c, pt.p
	for poll.Sleep(ctx, tailEvery) == nil {
		for _, peer := range c.o.Peers {
			on, _ := c.peers.tailing(peer)
			if !on {
				continue
			}
			shards := c.peerShards(ctx, peer)
			if shards == 0 {
				continue
			}
			from := pt.tailFrom(peer)
			if from == 0 {
				continue
			}
			pn := streams.Names{Region: peer, Shards: shards}
			recs, err := c.readClaims(ctx, pn.ClaimStreamOf(p), pn.Claims(p), from)
			if err != nil {
				c.lg.Debug("tail: reading a peer's claims", "partition", p, "peer", peer, "err", err)
				continue
			}
			_, stored := c.peers.tailing(peer)
			for _, r := range recs {
				r.region, r.stored, r.tail = peer, stored, true
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// tailFrom is where the partition's tail reads peer's claims from: after
// the last of them merged. 0 while the xclaims stream has brought none:
// the tail does not read a log from its start, whose oldest records only
// the xclaims stream's stored times place in the window.
func (pt *partition) tailFrom(peer string) uint64 {
	pt.tailMu.Lock()
	defer pt.tailMu.Unlock()
	return pt.tailNext[peer]
}

// readClaims reads up to tailBatch records of stream on subject from
// sequence from, in order, with one batch direct get (answered by the
// stream's servers, or a mirror of it, across the gateway), bounded to a
// second. Records that do not decode are skipped.
func (c *Consumer) readClaims(ctx context.Context, stream, subject string, from uint64) ([]remoteRec, error) {
	nc := c.js.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"seq": from, "next_by_subj": subject, "batch": tailBatch})
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Second)
	var out []remoteRec
	for {
		rctx, cancel := context.WithDeadline(ctx, deadline)
		m, err := sub.NextMsgWithContext(rctx)
		cancel()
		if err != nil {
			return out, err
		}
		if status := m.Header.Get("Status"); len(m.Data) == 0 && status != "" {
			switch status {
			case "204", "404": // end of batch; nothing at or after from
				return out, nil
			}
			return out, fmt.Errorf("direct get %s: status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return out, errors.New("direct get reply without a sequence")
		}
		rec, err := dedupe.Decode(m.Data)
		if err != nil {
			continue // foreign bytes or a bad record: the xclaims path counts it
		}
		out = append(out, remoteRec{seq: seq, origin: seq, rec: rec})
	}
}
