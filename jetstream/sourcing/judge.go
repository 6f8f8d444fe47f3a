// Package sourcing keeps a region's sourcing streams (xclaims, home)
// replicating through WAN faults. JetStream re-creates a source that lost
// its origin only after a health check of about 10 s and a retry backoff of
// up to 2 minutes, and a create request sent before the reply path is back
// waits 30 s: after a heal, replication resumed 3 to 43 s later. A watchdog
// in every core node looks at its streams' sources a few times a second and
// restarts, from its stored position, any source that has gone silent (or
// stopped moving while its origin moved on) once its origin answers again.
//
// The decisions are the Judge's, pure code over what one look saw; Watch is
// the I/O loop around it.
package sourcing

import (
	"time"
)

// Source is what one look saw of one source of a sourcing stream.
type Source struct {
	// Stream is the sourcing stream and Origin the stream it sources from.
	Stream, Origin string
	// Key names the source in Stream's configuration (see Key).
	Key string
	// Heard is how long ago the source was last heard of (a message or a
	// heartbeat; heartbeats come every second while it runs). Negative:
	// never, since the source was set up.
	Heard time.Duration
	// OriginUp reports that the origin stream answered this look: the path
	// to it and back works, so a restart can succeed.
	OriginUp bool
	// OriginLast is the origin's last sequence and Sourced the origin
	// sequence of the last message the stream holds from it; both zero
	// when not known (a source of some of its origin's subjects only).
	OriginLast, Sourced uint64
}

// Options tune a Judge. Zero values are the documented defaults.
type Options struct {
	// Silence is how long a source may go unheard before it is restarted
	// (heartbeats come every second). Zero means 2 s.
	Silence time.Duration
	// Stall is how old an origin message may be and still not be sourced:
	// a source that lacks what its origin held Stall ago, and has not moved
	// for Stall/2, is restarted. Zero means 2 s.
	Stall time.Duration
	// Grace is how long a source's origin must have answered before the
	// source is restarted: JetStream's own recovery after a gateway
	// reconnect takes about 2 s when it works (1 s heartbeats), and a
	// restart in its middle only delays it. Zero means 2 s.
	Grace time.Duration
	// Backoff is the wait before restarting the same source again, doubling
	// while restarts do not bring it back, up to 8 × Backoff. Zero means 2 s.
	Backoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.Silence == 0 {
		o.Silence = 2 * time.Second
	}
	if o.Stall == 0 {
		o.Stall = 2 * time.Second
	}
	if o.Backoff == 0 {
		o.Backoff = 2 * time.Second
	}
	if o.Grace == 0 {
		o.Grace = 2 * time.Second
	}
	return o
}

// Verdict is the Judge's view of one source after a look.
type Verdict struct {
	Source
	// Healthy: heard recently and not behind a moving origin.
	Healthy bool
	// Restart: restart the source now.
	Restart bool
	// Why says what is wrong when not healthy ("silent", "stalled",
	// "origin unreachable").
	Why string
}

// Judge decides which sources to restart. It remembers, per source, when it
// last moved and when it was last restarted.
type Judge struct {
	o    Options
	seen map[string]*memory // by Stream + Key
}

type memory struct {
	sourced   uint64
	movedAt   time.Time // when sourced last changed (or was first seen)
	origin    []seen    // the origin's last sequence at recent looks, oldest first
	restarted time.Time
	restarts  int       // restarts since the source was last healthy
	upSince   time.Time // since when the origin has answered every look (zero: it did not answer the last)
	touched   bool
}

type seen struct {
	at   time.Time
	last uint64
}

// originAt is the origin's last sequence as of the newest look at or
// before t (zero: no look that old).
func (m *memory) originAt(t time.Time) uint64 {
	var last uint64
	for _, o := range m.origin {
		if o.at.After(t) {
			break
		}
		last = o.last
	}
	return last
}

// NewJudge returns a Judge.
func NewJudge(o Options) *Judge {
	return &Judge{o: o.withDefaults(), seen: map[string]*memory{}}
}

// Step judges one look, taken at now, at every watched source. Sources not
// in the look are forgotten.
func (j *Judge) Step(now time.Time, look []Source) []Verdict {
	for _, m := range j.seen {
		m.touched = false
	}
	out := make([]Verdict, 0, len(look))
	for _, s := range look {
		id := s.Stream + "\x00" + s.Key
		m := j.seen[id]
		if m == nil {
			m = &memory{sourced: s.Sourced, movedAt: now}
			j.seen[id] = m
		}
		m.touched = true
		switch {
		case !s.OriginUp:
			m.upSince = time.Time{}
		case m.upSince.IsZero():
			m.upSince = now
		}
		if s.Sourced != m.sourced {
			m.sourced, m.movedAt = s.Sourced, now
		}
		if s.OriginLast != 0 {
			m.origin = append(m.origin, seen{now, s.OriginLast})
			// Keep one look older than Stall.
			for len(m.origin) > 1 && !m.origin[1].at.After(now.Add(-j.o.Stall)) {
				m.origin = m.origin[1:]
			}
		}
		v := Verdict{Source: s}
		silent := s.Heard > j.o.Silence || (s.Heard < 0 && now.Sub(m.movedAt) > j.o.Silence)
		// Stalled: what the origin held Stall ago is still not here, and
		// nothing has arrived for Stall/2 (a source catching up moves).
		stalled := s.OriginLast != 0 && s.Sourced < m.originAt(now.Add(-j.o.Stall)) && now.Sub(m.movedAt) > j.o.Stall/2
		switch {
		case silent:
			v.Why = "silent"
		case stalled:
			v.Why = "stalled"
		default:
			v.Healthy = true
			// A restart looks healthy until it can be judged again: the
			// count of restarts that did not help is forgotten only once
			// the source has stayed healthy past the next wait.
			if now.Sub(m.restarted) > j.wait(m.restarts)+j.o.Stall {
				m.restarts = 0
			}
		}
		if !v.Healthy && !s.OriginUp {
			// Nothing to restart against: the origin cannot be reached.
			v.Why = "origin unreachable"
		}
		if !v.Healthy && s.OriginUp && now.Sub(m.upSince) >= j.o.Grace && now.Sub(m.restarted) >= j.wait(m.restarts) {
			v.Restart = true
			m.restarted = now
			m.restarts++
			m.movedAt = now // give the restart time to show movement
			m.origin = m.origin[:0]
		}
		out = append(out, v)
	}
	for id, m := range j.seen {
		if !m.touched {
			delete(j.seen, id)
		}
	}
	return out
}

// wait is how long after a restart the same source may be restarted again,
// after n restarts that did not bring it back.
func (j *Judge) wait(n int) time.Duration {
	if n == 0 {
		return 0
	}
	return j.o.Backoff << min(n-1, 3)
}
