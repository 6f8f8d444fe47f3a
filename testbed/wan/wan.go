// Package wan simulates a wide-area link in user space: a TCP proxy that adds one-way delay, jitter and loss-induced stalls, and can cut and heal the link.
package wan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
)

const (
	// readBuf is the most one read takes from a socket: one chunk.
	readBuf = 32 << 10
	// queueLen is how many chunks may wait in one direction's delay queue.
	// A reader that finds the queue full stops reading, so the sender's TCP
	// window closes: at most queueLen × readBuf bytes (8 MiB) wait per
	// direction, and throughput is at most that much per one-way delay.
	queueLen = 256
	// helloTimeout bounds the wait for a client's first message when the
	// link checks where it comes from (LinkOptions.From).
	helloTimeout = 10 * time.Second
)

// LinkOptions configures a Link. Only Targets is required.
type LinkOptions struct {
	// Name identifies the link in logs. Zero means the listen address.
	Name string
	// Listen is the host:port to accept on. Zero means "127.0.0.1:0".
	Listen string
	// Targets are host:port addresses; each accepted connection dials them
	// in order until one answers. Required.
	Targets []string
	// Delay is the one-way delay added in each direction.
	Delay time.Duration
	// Jitter adds a uniform extra delay in [0, Jitter) to each chunk. Bytes
	// are never reordered: a chunk is delivered at
	// max(previous chunk's delivery, arrival+Delay+jitter).
	Jitter time.Duration
	// Loss (0..1) is the probability that a chunk suffers a retransmission
	// stall. TCP cannot lose bytes, so a lost chunk is delivered LossStall
	// later than it would have been, and so are all the chunks after it in
	// that direction (head-of-line blocking).
	Loss float64
	// LossStall is the stall of a lost chunk. Zero means 200 ms (a TCP RTO).
	LossStall time.Duration
	// DialTimeout bounds each dial of a target. Zero means 2 s.
	DialTimeout time.Duration
	// Logger receives the link's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Seed seeds the jitter and loss random source. Zero means time-based.
	Seed int64
	// From, when set, names the region whose gateway connections this
	// link carries, and the link refuses any other: before forwarding a
	// byte from the client, it reads what the client sends first (see
	// GatewayOf). NATS gossips every gateway URL a server is configured
	// with to the gateways that connect to it, so after a reconnect a third
	// region's gateway may dial this link's address and bypass its own
	// link (and its cut); From refuses it, and it dials its own link.
	// Zero means any connection is forwarded.
	From string
}

// Stats are a link's counters.
type Stats struct {
	Conns      int64 // proxied connections alive now
	Accepted   int64 // connections accepted for forwarding (while not cut)
	Refused    int64 // connections accepted and closed while cut, or not from the From region
	DialErrors int64 // accepted connections for which no target answered
	BytesUp    int64 // bytes delivered client → target
	BytesDown  int64 // bytes delivered target → client
}

// Link is a running WAN link: a listener whose connections are forwarded
// to a target through a delay queue in each direction. Its methods are
// safe for concurrent use.
type Link struct {
	opt  LinkOptions
	name string
	log  *slog.Logger
	ln   net.Listener
	addr string
	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	pmu    sync.Mutex // guards the link's shape and rng
	delay  time.Duration
	jitter time.Duration
	loss   float64
	rng    *rand.Rand

	mu     sync.Mutex
	conns  map[*conn]struct{} // live connections; a killed one is removed
	cut    bool
	closed bool
	nextID uint64

	accepted, refused, dialErrs, up, down atomic.Int64
}

// Listen starts a link: it listens on o.Listen and forwards every accepted
// connection to the first of o.Targets that answers.
func Listen(o LinkOptions) (*Link, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	name := o.Name
	if name == "" {
		name = o.Listen
	}
	switch {
	case len(o.Targets) == 0:
		return nil, fmt.Errorf("wan %s: no targets", name)
	case o.Delay < 0 || o.Jitter < 0 || o.LossStall < 0 || o.DialTimeout < 0:
		return nil, fmt.Errorf("wan %s: negative duration", name)
	case !(o.Loss >= 0 && o.Loss <= 1):
		return nil, fmt.Errorf("wan %s: loss %v not in [0, 1]", name, o.Loss)
	}
	o.Targets = slices.Clone(o.Targets)
	if o.LossStall == 0 {
		o.LossStall = 200 * time.Millisecond
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	seed := o.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("wan %s: %w", name, err)
	}
	addr := ln.Addr().String()
	if o.Name == "" {
		name = addr
	}
	l := &Link{
		opt:    o,
		name:   name,
		log:    o.Logger.With("link", name),
		ln:     ln,
		addr:   addr,
		done:   make(chan struct{}),
		delay:  o.Delay,
		jitter: o.Jitter,
		loss:   o.Loss,
		rng:    rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)),
		conns:  map[*conn]struct{}{},
	}
	l.log.Info("wan link up", "listen", addr, "targets", o.Targets, "delay", o.Delay, "jitter", o.Jitter, "loss", o.Loss)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr is the address the link listens on (host:port).
func (l *Link) Addr() string { return l.addr }

// SetDelay changes the one-way delay and jitter for chunks that arrive
// from now on. Negative values mean zero.
func (l *Link) SetDelay(delay, jitter time.Duration) {
	delay, jitter = max(delay, 0), max(jitter, 0)
	l.pmu.Lock()
	l.delay, l.jitter = delay, jitter
	l.pmu.Unlock()
	l.log.Info("wan delay set", "delay", delay, "jitter", jitter)
}

// SetLoss changes the stall probability for chunks that arrive from now
// on, clamped to [0, 1].
func (l *Link) SetLoss(loss float64) {
	if !(loss > 0) { // also NaN
		loss = 0
	}
	loss = min(loss, 1)
	l.pmu.Lock()
	l.loss = loss
	l.pmu.Unlock()
	l.log.Info("wan loss set", "loss", loss)
}

// Cut takes the link down: every live connection is closed on both sides
// and, until Heal, new connections are accepted and closed at once, as a
// partition that resets connections would look to the dialer.
func (l *Link) Cut() {
	l.mu.Lock()
	was := l.cut
	l.cut = true
	n := len(l.conns)
	for c := range l.conns {
		l.killLocked(c)
	}
	l.mu.Unlock()
	if !was {
		l.log.Info("wan link cut", "closed", n)
	}
}

// Heal brings a cut link back up: new connections are forwarded again.
func (l *Link) Heal() {
	l.mu.Lock()
	was := l.cut
	l.cut = false
	l.mu.Unlock()
	if was {
		l.log.Info("wan link healed")
	}
}

// IsCut reports whether the link is cut.
func (l *Link) IsCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	n := len(l.conns)
	l.mu.Unlock()
	return Stats{
		Conns:      int64(n),
		Accepted:   l.accepted.Load(),
		Refused:    l.refused.Load(),
		DialErrors: l.dialErrs.Load(),
		BytesUp:    l.up.Load(),
		BytesDown:  l.down.Load(),
	}
}

// Close stops listening, closes every connection and returns once all of
// the link's goroutines have ended. Closing twice is harmless.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wg.Wait()
		return nil
	}
	l.closed = true
	close(l.done)
	for c := range l.conns {
		l.killLocked(c)
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	l.log.Info("wan link closed")
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("wan %s: %w", l.name, err)
	}
	return nil
}

// conn is one proxied connection.
type conn struct {
	id     uint64
	client net.Conn
	target net.Conn      // set once dialed; guarded by Link.mu
	dead   bool          // guarded by Link.mu
	done   chan struct{} // closed when killed
	cancel context.CancelFunc
}

// kill closes both sides of c (idempotent).
func (l *Link) kill(c *conn) {
	l.mu.Lock()
	l.killLocked(c)
	l.mu.Unlock()
}

func (l *Link) killLocked(c *conn) {
	if c.dead {
		return
	}
	c.dead = true
	delete(l.conns, c)
	close(c.done)
	c.cancel()
	_ = c.client.Close()
	if c.target != nil {
		_ = c.target.Close()
	}
}

func (l *Link) acceptLoop() {
	defer l.wg.Done()
	b := poll.Backoff(5*time.Millisecond, time.Second)
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			wait := b.NextBackOff()
			l.log.Warn("wan accept", "err", err, "retry", wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
			continue
		}
		b.Reset()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = nc.Close()
			return
		}
		if l.cut {
			l.mu.Unlock()
			_ = nc.Close()
			l.refused.Add(1)
			l.log.Debug("wan refused (cut)", "from", nc.RemoteAddr().String())
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		l.nextID++
		c := &conn{id: l.nextID, client: nc, done: make(chan struct{}), cancel: cancel}
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		l.accepted.Add(1)
		go l.serve(ctx, c)
	}
}

// serve dials a target for c and pumps both ways until both directions
// have ended or c is killed.
func (l *Link) serve(ctx context.Context, c *conn) {
	defer l.wg.Done()
	defer l.kill(c)
	log := l.log.With("conn", c.id)
	target, err := l.dial(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.dialErrs.Add(1)
			log.Warn("wan dial: no target answered", "err", err)
		}
		return
	}
	l.mu.Lock()
	if c.dead {
		l.mu.Unlock()
		_ = target.Close()
		return
	}
	c.target = target
	l.mu.Unlock()
	log.Debug("wan conn open", "from", c.client.RemoteAddr().String(), "to", target.RemoteAddr().String())
	var wg sync.WaitGroup
	// Target to client first: without TLS the server speaks first (its
	// INFO); the client's first message says where it comes from.
	wg.Go(func() { l.pump(c, target, c.client, &l.down) })
	var up io.Reader = c.client
	if l.opt.From != "" {
		_ = c.client.SetReadDeadline(time.Now().Add(helloTimeout))
		from, read, err := GatewayOf(ctx, c.client)
		_ = c.client.SetReadDeadline(time.Time{})
		if err != nil || from != l.opt.From {
			l.refused.Add(1)
			log.Debug("wan refused (not the link's region)", "want", l.opt.From, "from", from, "err", err)
			l.kill(c)
			wg.Wait()
			return
		}
		up = io.MultiReader(bytes.NewReader(read), c.client)
	}
	wg.Go(func() { l.pump(c, up, target, &l.up) })
	wg.Wait()
	log.Debug("wan conn closed")
}

func (l *Link) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: l.opt.DialTimeout}
	var errs []error
	for _, t := range l.opt.Targets {
		nc, err := d.DialContext(ctx, "tcp", t)
		if err == nil {
			return nc, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// chunk is one read's bytes and when they are to be delivered.
type chunk struct {
	data []byte
	at   time.Time
}

// schedule returns when a chunk that arrived at arrival is delivered,
// given that the previous chunk in its direction is delivered at prev.
func (l *Link) schedule(arrival, prev time.Time) time.Time {
	l.pmu.Lock()
	d := l.delay
	if l.jitter > 0 {
		d += time.Duration(l.rng.Int64N(int64(l.jitter)))
	}
	lost := l.loss > 0 && l.rng.Float64() < l.loss
	l.pmu.Unlock()
	at := arrival.Add(d)
	if at.Before(prev) {
		at = prev
	}
	if lost {
		at = at.Add(l.opt.LossStall)
	}
	return at
}

// pump moves bytes from src to dst through a delay queue: a reader
// goroutine stamps each chunk with its delivery time, this goroutine
// writes it when that time comes. On EOF from src the queue drains and
// dst's write side is closed; on any other error c is killed.
func (l *Link) pump(c *conn, src io.Reader, dst net.Conn, n *atomic.Int64) {
	q := make(chan chunk, queueLen)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(q)
		buf := make([]byte, readBuf)
		var prev time.Time
		for {
			k, err := src.Read(buf)
			if k > 0 {
				prev = l.schedule(time.Now(), prev)
				select {
				case q <- chunk{data: slices.Clone(buf[:k]), at: prev}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					l.kill(c)
				}
				return
			}
		}
	}()
	defer func() { <-readerDone }()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for ch := range q {
		if wait := time.Until(ch.at); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
		k, err := dst.Write(ch.data)
		n.Add(int64(k))
		if err != nil {
			l.kill(c)
			return
		}
	}
	select {
	case <-c.done:
	default:
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
}
