package edge

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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

// Between suspect windows each partition still reads beyond what it merged
// once per tailIdle: a source can stall without falling silent (heartbeats
// arrive, no messages: nats-server #8630) or vanish from the stream's
// sources, and neither is a silence. Such a read finds nothing in steady
// state (the xclaims stream is ahead of it), and a stalled peer's claims
// within about tailIdle.

const (
	tailEvery  = 250 * time.Millisecond
	tailIdle   = time.Second      // between reads of a peer that is not suspect
	tailSilent = time.Second      // a peer's sources silent this long: replication is suspect
	tailLinger = 10 * time.Second // tail this long after the last suspect look
	tailBatch  = 256
	tailBytes  = 1 << 20 // per read: a peer's largest records must not swamp an edge
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
	mu      sync.Mutex
	suspect map[string]time.Time // peer -> when its sources were last seen silent
	server  time.Time            // this region's server time at the last look
	local   time.Time            // this edge's clock at the last look
	shards  map[string]int       // peer -> claim shard count, as the xclaims streams source them
}

// watchPeers keeps c.peers current until ctx ends. The peers' shard
// counts are read once, from the xclaims streams' sources.
func (c *Consumer) watchPeers(ctx context.Context) {
	for poll.Sleep(ctx, tailEvery) == nil {
		if c.peers.shards == nil { // this goroutine alone writes it
			shards := map[string]int{}
			for _, q := range c.o.Peers {
				n, err := streams.SourcedShards(ctx, c.js, streams.Config{Names: c.names, Peers: c.o.Peers}, q)
				if err != nil {
					shards = nil
					break
				}
				shards[q] = n
			}
			c.peers.mu.Lock()
			c.peers.shards = shards
			c.peers.mu.Unlock()
		}
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

// tailing reports whether peer is suspect: its sources were seen silent
// within tailLinger, so partitions read its claims every tailEvery.
func (w *peerWatch) tailing(peer string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.suspect[peer]
	return ok && time.Since(at) <= tailLinger
}

// serverNow is this region's server time now (the xclaims stream's clock),
// as of the last look; zero before the first.
func (w *peerWatch) serverNow() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.server.IsZero() {
		return time.Time{}
	}
	return w.server.Add(time.Since(w.local))
}

// peerShards returns peer's claim shard count as the xclaims streams
// source it (0: not known yet).
func (w *peerWatch) peerShards(peer string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shards[peer]
}

// tail reads, while tailing says so, each peer's claims of the partition
// from where the partition has merged them (pt.tailFrom) and sends them to
// out, until ctx ends.
func (pt *partition) tail(ctx context.Context, out chan<- remoteRec) {
	c, p := pt.c, pt.p
	past := map[string]uint64{}    // by peer: the last sequence read, records or not
	read := map[string]time.Time{} // by peer: the last read
	for poll.Sleep(ctx, tailEvery) == nil {
		for _, peer := range c.o.Peers {
			if !c.peers.tailing(peer) && time.Since(read[peer]) < tailIdle {
				continue
			}
			shards := c.peers.peerShards(peer)
			if shards == 0 {
				continue
			}
			from := pt.tailFrom(peer)
			if from == 0 {
				continue
			}
			// Past what a read found already, foreign bytes included: a
			// run of them must not hold every read at its start.
			from = max(from, past[peer]+1)
			stored := c.peers.serverNow()
			if stored.IsZero() {
				continue
			}
			read[peer] = time.Now()
			pn := streams.Names{Region: peer, Shards: shards}
			recs, last, err := c.readClaims(ctx, pn.ClaimStreamOf(p), pn.Claims(p), from)
			past[peer] = max(past[peer], last)
			if err != nil {
				// What came before the error is in order from from: merged.
				c.lg.Debug("tail: reading a peer's claims", "partition", p, "peer", peer, "err", err)
			}
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
// second and to tailBytes (at least one message comes whatever its size).
// Records that do not decode are skipped. It returns the records and the
// last sequence read (records or not).
func (c *Consumer) readClaims(ctx context.Context, stream, subject string, from uint64) ([]remoteRec, uint64, error) {
	var out []remoteRec
	var last uint64
	req := map[string]any{"seq": from, "next_by_subj": subject, "batch": tailBatch, "max_bytes": tailBytes}
	_, err := streams.DirectBatch(ctx, c.js.Conn(), stream, req, time.Second, func(m *nats.Msg) error {
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return errors.New("direct get reply without a sequence")
		}
		last = seq
		if rec, err := dedupe.Decode(m.Data); err == nil { // else foreign bytes or a bad record: the xclaims path counts it
			out = append(out, remoteRec{seq: seq, origin: seq, rec: rec})
		}
		return nil
	})
	return out, last, err
}
