// Package gossip is onceplane's membership: a hashicorp/memberlist cluster of
// edges (and core nodes where useful) with node metadata, join/leave/failure
// events, a shared encryption key, timers tuned for fast failure detection,
// and a periodic re-join so a healed network partition merges back.
package gossip

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a member tells the others about itself (at most 512 bytes encoded).
type Meta struct {
	Region  string `json:"region,omitempty"`
	Role    string `json:"role,omitempty"` // "edge" or "core"
	Admin   string `json:"admin,omitempty"`
	Version string `json:"version,omitempty"`
	// Leaving is set by Leave before the member goes, so that the others
	// report a graceful departure rather than a failure.
	Leaving bool `json:"leaving,omitempty"`
	// Proof is the member's proof that it holds its role's and region's
	// secret (Options.Proof): hex HMAC-SHA256 of its name, role, region
	// and gossip address.
	Proof string `json:"proof,omitempty"`
}

// Member is one live member.
type Member struct {
	Name string
	Addr string
	Meta Meta
	// Proven is true when the member's Meta.Proof verifies with this
	// member's Options.Proof (always false when that is empty).
	Proven bool
}

// EventKind says what happened to a member.
type EventKind int

const (
	Joined EventKind = iota
	Left             // left gracefully
	Failed           // declared dead by failure detection
	Updated
)

func (k EventKind) String() string {
	return [...]string{"joined", "left", "failed", "updated"}[k]
}

// Event is one membership change.
type Event struct {
	Kind   EventKind
	Member Member
	At     time.Time
}

// Profile selects memberlist timers.
type Profile int

const (
	// Fast detects a failed member in about 1-2 s on a LAN or one machine:
	// probe every 250 ms (100 ms timeout), suspicion 3 × max(1, log10 N) × 250 ms.
	// It costs more probe traffic and is less tolerant of stalls (GC, CPU
	// starvation): a member stalled longer than ~1 s is declared dead, fenced
	// by the claim log if it owned anything, and rejoins when it wakes.
	Fast Profile = iota
	// LAN is memberlist's DefaultLANConfig: ~5-7 s to declare a member dead.
	LAN
)

// Options configures a member. Name and BindAddr are required in spirit;
// the zero value binds 127.0.0.1 on a free port with the Fast profile and
// no encryption.
type Options struct {
	// Name is unique in the cluster. Zero means the host name.
	Name string
	// BindAddr and BindPort are where gossip listens (TCP and UDP). Zero means
	// 127.0.0.1 and a free port.
	BindAddr string
	BindPort int
	// Seeds are host:port addresses of members to join (and re-join).
	Seeds []string
	// Meta is published to the other members.
	Meta Meta
	// Key is the gossip encryption key (16, 24 or 32 bytes). Nil means plain text.
	Key []byte
	// Proof is a secret only the members of this member's role and region
	// hold (an edge's: its region's NATS edge password). With it, this
	// member proves itself to the others and counts (Names) only the
	// members that prove themselves with the same secret: one that has the
	// gossip key alone, or another region's, can join but never takes a
	// partition. Nil means no proof: members count by their Meta alone.
	Proof []byte
	// Profile selects timers. Zero means Fast.
	Profile Profile
	// RejoinInterval is how often seeds that are not members are joined
	// again, so that members separated for longer than the failure timeouts
	// merge back (memberlist does not do it by itself). Zero means 2 s.
	RejoinInterval time.Duration
	// Logger receives memberlist's logs at debug level. Nil means discard.
	Logger *slog.Logger
}

// Cluster is this process's view of the membership.
type Cluster struct {
	ml      *memberlist.Memberlist
	opt     Options
	mu      sync.Mutex
	subs    []chan Event
	changes chan struct{}
	members map[string]Member // live members, kept from the event callbacks
	addr    string
	leaving map[string]bool // members that announced a graceful leave
	del     *delegate
	stop    chan struct{}
	done    chan struct{}
	closed  bool
}

// FastConfig is the memberlist configuration of the Fast profile:
// memberlist's LAN defaults with probes every 250 ms (100 ms timeout),
// suspicion ×3, gossip every 100 ms, push-pull every 5 s, awareness ×2 at
// most and 2 s TCP timeouts.
func FastConfig() *memberlist.Config {
	cfg := memberlist.DefaultLANConfig()
	cfg.ProbeInterval = 250 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.SuspicionMult = 3
	cfg.GossipInterval = 100 * time.Millisecond
	cfg.PushPullInterval = 5 * time.Second
	cfg.AwarenessMaxMultiplier = 2
	cfg.TCPTimeout = 2 * time.Second
	return cfg
}

// Start creates the local member and joins the seeds it can reach. A member
// that reaches no seed starts alone and keeps trying.
func Start(o Options) (*Cluster, error) {
	if o.RejoinInterval <= 0 {
		o.RejoinInterval = 2 * time.Second
	}
	if o.BindAddr == "" {
		o.BindAddr = "127.0.0.1"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := FastConfig()
	if o.Profile == LAN {
		cfg = memberlist.DefaultLANConfig()
	}
	if o.Name != "" {
		cfg.Name = o.Name
	}
	// A member restarted with another address (a container rescheduled)
	// takes its name back once the old one is dead; memberlist's default
	// refuses it until the dead entry is reaped.
	cfg.DeadNodeReclaimTime = 5 * cfg.ProbeInterval
	cfg.BindAddr, cfg.BindPort = o.BindAddr, o.BindPort
	cfg.AdvertiseAddr, cfg.AdvertisePort = "", 0
	if len(o.Key) > 0 {
		switch len(o.Key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", len(o.Key))
		}
		cfg.SecretKey = o.Key
	}
	cfg.Logger = slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug)
	c := &Cluster{opt: o, stop: make(chan struct{}), done: make(chan struct{}), leaving: map[string]bool{}, changes: make(chan struct{}, 1), members: map[string]Member{}}
	meta, err := json.Marshal(o.Meta)
	if err != nil || len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip meta: %d bytes (max %d): %v", len(meta), memberlist.MetaMaxSize, err)
	}
	c.del = &delegate{meta: meta}
	cfg.Delegate = c.del
	cfg.Events = &events{c: c}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip %s: %w", cfg.Name, err)
	}
	c.ml = ml
	c.opt.Name = cfg.Name
	ln := ml.LocalNode()
	c.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	if len(o.Proof) > 0 {
		// The proof names the address, known only now: publish it
		// before joining anyone.
		c.opt.Meta.Proof = proof(o.Proof, c.opt.Name, c.opt.Meta, c.addr)
		b, err := json.Marshal(c.opt.Meta)
		if err != nil || len(b) > memberlist.MetaMaxSize {
			_ = ml.Shutdown()
			return nil, fmt.Errorf("gossip meta: %d bytes (max %d): %v", len(b), memberlist.MetaMaxSize, err)
		}
		c.del.setMeta(b)
		if err := ml.UpdateNode(time.Second); err != nil {
			_ = ml.Shutdown()
			return nil, fmt.Errorf("gossip %s: %w", cfg.Name, err)
		}
	}
	if len(o.Seeds) > 0 {
		_, _ = ml.Join(c.others(o.Seeds))
	}
	go c.rejoinLoop()
	return c, nil
}

// Name is this member's name.
func (c *Cluster) Name() string { return c.opt.Name }

// Addr is this member's gossip address (host:port).
func (c *Cluster) Addr() string { return c.addr }

// Members returns the live members, this one included, sorted by name.
// (It reads a copy kept from memberlist's event callbacks: the nodes that
// memberlist.Members returns are mutated under its lock afterwards.)
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// Names returns the names of the live members that have this member's
// role and region, sorted: for an edge, the edges of its region that share
// out its partitions (a drill observer, a core node, or an edge of another
// region that joined the same cluster through a flat network or shared
// seeds is not one of them: it would take partitions it never consumes).
// With Options.Proof, only the members that prove their role and region
// count.
func (c *Cluster) Names() []string {
	var out []string
	for _, m := range c.Members() {
		if len(c.opt.Proof) > 0 && !m.Proven {
			continue
		}
		if m.Meta.Role == c.opt.Meta.Role && m.Meta.Region == c.opt.Meta.Region {
			out = append(out, m.Name)
		}
	}
	return out
}

// Subscribe returns a channel of membership events (buffered; a subscriber
// that falls 1,024 events behind misses events but can always re-read Members).
func (c *Cluster) Subscribe() <-chan Event {
	ch := make(chan Event, 1024)
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
	return ch
}

func (c *Cluster) publish(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for _, ch := range c.subs {
		select {
		case ch <- e:
		default:
		}
	}
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Changes receives a value after any membership change; several changes
// may be coalesced into one value. Read Names or Members for the new view.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

// SetSeeds replaces the addresses the periodic re-join uses.
func (c *Cluster) SetSeeds(seeds []string) {
	c.mu.Lock()
	c.opt.Seeds = slices.Clone(seeds)
	c.mu.Unlock()
}

// Leave announces a graceful departure and stops gossip.
func (c *Cluster) Leave(timeout time.Duration) error {
	m := c.opt.Meta
	m.Leaving = true
	b, _ := json.Marshal(m)
	c.del.setMeta(b)
	err := c.ml.UpdateNode(timeout)
	err = errors.Join(err, c.ml.Leave(timeout))
	return errors.Join(err, c.Shutdown())
}

// Shutdown stops gossip without announcing (as a crash would look).
func (c *Cluster) Shutdown() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for _, ch := range c.subs {
		close(ch)
	}
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	return c.ml.Shutdown()
}

func (c *Cluster) others(seeds []string) []string {
	self := c.Addr()
	var out []string
	for _, s := range seeds {
		if s != self {
			out = append(out, s)
		}
	}
	return out
}

// rejoinLoop joins every seed that is not a live member (memberlist issue
// #222: members cut off longer than the timeouts never merge back alone).
func (c *Cluster) rejoinLoop() {
	defer close(c.done)
	t := time.NewTicker(c.opt.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		live := map[string]bool{}
		for _, m := range c.Members() {
			live[m.Addr] = true
		}
		c.mu.Lock()
		seeds := c.opt.Seeds
		c.mu.Unlock()
		var missing []string
		for _, s := range c.others(seeds) {
			if !live[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			_, _ = c.ml.Join(missing)
		}
	}
}

func (c *Cluster) toMember(n *memberlist.Node) Member {
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	_ = json.Unmarshal(n.Meta, &m.Meta)
	if len(c.opt.Proof) > 0 && m.Meta.Proof != "" {
		want := proof(c.opt.Proof, m.Name, m.Meta, m.Addr)
		m.Proven = hmac.Equal([]byte(m.Meta.Proof), []byte(want))
	}
	return m
}

// proof is the proof of member name with meta at addr, under secret: it
// binds the name, role, region and address, so a member cannot replay
// another's under its own name or from another address.
func proof(secret []byte, name string, meta Meta, addr string) string {
	h := hmac.New(sha256.New, secret)
	for _, s := range []string{"onceplane-gossip-proof-v1", name, meta.Role, meta.Region, addr} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

type delegate struct {
	mu   sync.Mutex
	meta []byte
}

func (d *delegate) setMeta(b []byte) {
	d.mu.Lock()
	d.meta = b
	d.mu.Unlock()
}

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ c *Cluster }

func (e *events) NotifyJoin(n *memberlist.Node) {
	m := e.c.toMember(n)
	e.c.mu.Lock()
	delete(e.c.leaving, m.Name)
	e.c.members[m.Name] = m
	e.c.mu.Unlock()
	e.c.publish(Event{Kind: Joined, Member: m, At: time.Now()})
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	m := e.c.toMember(n)
	e.c.mu.Lock()
	k := Failed
	if e.c.leaving[m.Name] || m.Meta.Leaving {
		k = Left
	}
	delete(e.c.leaving, m.Name)
	delete(e.c.members, m.Name)
	e.c.mu.Unlock()
	e.c.publish(Event{Kind: k, Member: m, At: time.Now()})
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	m := e.c.toMember(n)
	e.c.mu.Lock()
	if m.Meta.Leaving {
		e.c.leaving[m.Name] = true
	}
	if _, ok := e.c.members[m.Name]; ok {
		e.c.members[m.Name] = m
	}
	e.c.mu.Unlock()
	e.c.publish(Event{Kind: Updated, Member: m, At: time.Now()})
}
