// Package topology describes a multi-region deployment in one config file:
// regions, their core nodes and edges, the partition count, the dedupe window,
// the cross-region mode, and the round-trip times between regions. It parses,
// validates with errors that name the offending field, and supplies the
// built-in three-region default.
package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/onceplane/onceplane/jetstream/streams"
)

// Mode is the cross-region dedupe mode.
type Mode string

const (
	// Async decides events in the region they arrive in; claim logs replicate
	// to every region and races inside the replication lag are conflicts (G2).
	Async Mode = "async"
	// Strict routes every event to its partition's home region and decides it
	// there: exactly once globally, at the cost of WAN latency (G3).
	Strict Mode = "strict"
)

// Duration is a time.Duration written as a Go duration string ("80ms").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"80ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Topology is a deployment. Zero values of optional fields are documented
// per field and filled by Defaults.
type Topology struct {
	// Name labels the deployment. Zero means "onceplane".
	Name string `json:"name,omitempty"`
	// Partitions is the partition count, the same in every region. Zero means 16.
	Partitions int `json:"partitions,omitempty"`
	// Window is how long an ID is remembered. Zero means 24h.
	Window Duration `json:"window,omitempty"`
	// Mode is "async" (zero) or "strict".
	Mode Mode `json:"mode,omitempty"`
	// Homes overrides the home region of partitions in strict mode
	// (partition number as a string -> region). Partitions not listed are
	// spread round-robin over the regions in order.
	Homes map[string]string `json:"homes,omitempty"`
	// Replicas per region stream. Zero means 3 in regions with 3 or more
	// core nodes, else 1.
	Replicas int `json:"replicas,omitempty"`
	// Regions lists the regions; at least one.
	Regions []Region `json:"regions"`
	// Links gives the WAN link of every pair of regions (required for every
	// pair when there are two or more regions).
	Links []Link `json:"links,omitempty"`
	// GossipKeyFile names a file holding the hex gossip encryption key
	// (16, 24 or 32 bytes). Zero means no encryption (single-machine simulation).
	GossipKeyFile string `json:"gossip_key_file,omitempty"`
}

// Region is one JetStream cluster plus its edges.
type Region struct {
	// Name is the region and JetStream cluster name: lower-case letters,
	// digits and '-'.
	Name string `json:"name"`
	// Cores are the region's core nodes: 1, or 3 or more for R3 streams.
	Cores []Core `json:"cores"`
	// Edges are the region's edge nodes; at least one.
	Edges []Edge `json:"edges"`
	// Shards is how many shards the region's partitions are spread over,
	// each with its own ingest and claim streams led by a different core
	// node (streams.Names). Zero means one per core node (at most the
	// partition count).
	Shards int `json:"shards,omitempty"`
	// Standby is the region that mirrors this region's ingest, so that the
	// events this region accepted survive its loss, and whose edges take
	// its partitions over when it is declared dead. Zero means none.
	Standby string `json:"standby,omitempty"`
}

// ShardCount is region r's shard count under t.
func (t Topology) ShardCount(r Region) int {
	if r.Shards > 0 {
		return r.Shards
	}
	return max(1, min(len(r.Cores), t.Partitions))
}

// Core is one core node. Zero ports are chosen free at start.
type Core struct {
	// Name is the server name, unique in the deployment.
	Name string `json:"name"`
	// Host is the listen host. Zero means 127.0.0.1.
	Host string `json:"host,omitempty"`
	// Port, ClusterPort and GatewayPort are the client, route and gateway ports.
	Port        int `json:"port,omitempty"`
	ClusterPort int `json:"cluster_port,omitempty"`
	GatewayPort int `json:"gateway_port,omitempty"`
}

// Edge is one edge node. Zero ports are chosen free at start.
type Edge struct {
	// Name is the edge's member and writer name, unique in the deployment.
	Name string `json:"name"`
	// GossipPort and AdminPort are the memberlist and admin HTTP ports.
	GossipPort int `json:"gossip_port,omitempty"`
	AdminPort  int `json:"admin_port,omitempty"`
}

// Link is the WAN link between regions A and B.
type Link struct {
	A string `json:"a"`
	B string `json:"b"`
	// RTT is the round-trip time; each direction is delayed RTT/2.
	RTT Duration `json:"rtt"`
	// Jitter is extra one-way delay, uniform in [0, Jitter).
	Jitter Duration `json:"jitter,omitempty"`
	// Loss is the chance (0 to 1) that a chunk stalls as for a TCP retransmit.
	Loss float64 `json:"loss,omitempty"`
}

// Default is the built-in three-region deployment: us-east, eu-west and
// ap-south, one core node and two edges each, with round-trip times of
// about 80 ms us-east/eu-west, 120 ms eu-west/ap-south and 190 ms
// us-east/ap-south.
func Default() Topology {
	region := func(name string) Region {
		return Region{
			Name:  name,
			Cores: []Core{{Name: name + "-core-0"}},
			Edges: []Edge{{Name: name + "-edge-0"}, {Name: name + "-edge-1"}},
		}
	}
	ms := func(n int) Duration { return Duration(time.Duration(n) * time.Millisecond) }
	return Topology{
		Name: "onceplane-sim", Partitions: 8, Window: Duration(time.Hour), Mode: Async,
		Regions: []Region{region("us-east"), region("eu-west"), region("ap-south")},
		Links: []Link{
			{A: "us-east", B: "eu-west", RTT: ms(80), Jitter: ms(2)},
			{A: "eu-west", B: "ap-south", RTT: ms(120), Jitter: ms(3)},
			{A: "us-east", B: "ap-south", RTT: ms(190), Jitter: ms(4)},
		},
	}
}

// Load reads, defaults and validates a topology file.
func Load(path string) (Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Topology{}, fmt.Errorf("topology: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return Topology{}, fmt.Errorf("topology %s: %w", path, err)
	}
	return t, nil
}

// Parse decodes JSON (unknown fields are errors), fills defaults and validates.
func Parse(b []byte) (Topology, error) {
	var t Topology
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Topology{}, fmt.Errorf("decode: %w", err)
	}
	t = t.Defaults()
	if err := t.Validate(); err != nil {
		return Topology{}, err
	}
	return t, nil
}

// Defaults returns t with zero optional fields set.
func (t Topology) Defaults() Topology {
	if t.Name == "" {
		t.Name = "onceplane"
	}
	if t.Partitions == 0 {
		t.Partitions = 16
	}
	if t.Window == 0 {
		t.Window = Duration(24 * time.Hour)
	}
	if t.Mode == "" {
		t.Mode = Async
	}
	t.Regions = slices.Clone(t.Regions)
	for i := range t.Regions {
		r := &t.Regions[i]
		r.Cores = slices.Clone(r.Cores)
		for j := range r.Cores {
			if r.Cores[j].Host == "" {
				r.Cores[j].Host = "127.0.0.1"
			}
		}
	}
	return t
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate reports every problem in t, each naming its field.
func (t Topology) Validate() error {
	v := validation{regions: map[string]bool{}, servers: map[string]string{}, ports: map[string]string{}, partitions: t.Partitions}
	if t.Partitions < 1 || t.Partitions > 4096 {
		v.bad("partitions", "%d is not in 1..4096", t.Partitions)
	}
	if time.Duration(t.Window) < time.Second {
		v.bad("window", "%v is shorter than 1s", time.Duration(t.Window))
	}
	if t.Mode != Async && t.Mode != Strict {
		v.bad("mode", "%q is neither %q nor %q", t.Mode, Async, Strict)
	}
	if t.Replicas != 0 && t.Replicas != 1 && t.Replicas != 3 {
		v.bad("replicas", "%d is not 1 or 3", t.Replicas)
	}
	if len(t.Regions) == 0 {
		v.bad("regions", "at least one region is required")
	}
	for i, r := range t.Regions {
		v.region(fmt.Sprintf("regions[%d]", i), r, t.Replicas)
	}
	v.links(t)
	for i, r := range t.Regions {
		switch {
		case r.Standby == "":
		case r.Standby == r.Name:
			v.bad(fmt.Sprintf("regions[%d].standby", i), "a region cannot stand by for itself")
		case !v.regions[r.Standby]:
			v.bad(fmt.Sprintf("regions[%d].standby", i), "unknown region %q", r.Standby)
		}
	}
	for k, r := range t.Homes {
		p, err := strconv.Atoi(k)
		if err != nil || p < 0 || p >= t.Partitions {
			v.bad("homes", "%q is not a partition in 0..%d", k, t.Partitions-1)
		}
		if !v.regions[r] {
			v.bad("homes."+k, "unknown region %q", r)
		}
	}
	return errors.Join(v.errs...)
}

// validation collects what Validate finds wrong, field by field.
type validation struct {
	errs    []error
	regions map[string]bool   // region names seen
	servers map[string]string // core and edge names seen, and where
	ports   map[string]string // host:port seen, and where
	// partitions is the topology's partition count.
	partitions int
}

func (v *validation) bad(field, format string, a ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
}

// port checks a listener's port: in range, and not taken on its host.
func (v *validation) port(field, host string, p int) {
	if p == 0 {
		return
	}
	if p < 0 || p > 65535 {
		v.bad(field, "port %d out of range", p)
		return
	}
	k := host + ":" + strconv.Itoa(p)
	if prev, ok := v.ports[k]; ok {
		v.bad(field, "port %s already used by %s", k, prev)
	}
	v.ports[k] = field
}

// name checks a core's or edge's name: well formed and unique.
func (v *validation) name(field, name string) {
	if !nameRE.MatchString(name) {
		v.bad(field+".name", "%q must be 1-63 lower-case letters, digits or '-'", name)
	}
	if prev, ok := v.servers[name]; ok {
		v.bad(field+".name", "%q already names %s", name, prev)
	}
	v.servers[name] = field
}

// region checks region r (at field f): its name, its cores and its edges.
func (v *validation) region(f string, r Region, replicas int) {
	if err := streams.ValidateRegion(r.Name); err != nil {
		v.bad(f+".name", "%v", err)
	}
	if v.regions[r.Name] {
		v.bad(f+".name", "duplicate region %q", r.Name)
	}
	v.regions[r.Name] = true
	switch n := len(r.Cores); {
	case n == 0:
		v.bad(f+".cores", "region %q has no core node", r.Name)
	case n == 2:
		v.bad(f+".cores", "region %q has 2 core nodes: use 1, or 3 or more (2 cannot keep a quorum)", r.Name)
	}
	if r.Shards < 0 || r.Shards > v.partitions {
		v.bad(f+".shards", "%d is not in 1..%d (the partition count)", r.Shards, v.partitions)
	}
	if replicas == 3 && len(r.Cores) < 3 {
		v.bad(f+".cores", "replicas 3 needs 3 core nodes in region %q", r.Name)
	}
	for j, c := range r.Cores {
		cf := fmt.Sprintf("%s.cores[%d]", f, j)
		v.name(cf, c.Name)
		v.port(cf+".port", c.Host, c.Port)
		v.port(cf+".cluster_port", c.Host, c.ClusterPort)
		v.port(cf+".gateway_port", c.Host, c.GatewayPort)
	}
	if len(r.Edges) == 0 {
		v.bad(f+".edges", "region %q has no edge", r.Name)
	}
	for j, e := range r.Edges {
		ef := fmt.Sprintf("%s.edges[%d]", f, j)
		v.name(ef, e.Name)
		v.port(ef+".gossip_port", "edge", e.GossipPort)
		v.port(ef+".admin_port", "edge", e.AdminPort)
	}
}

// links checks every link and that every pair of regions has one.
func (v *validation) links(t Topology) {
	pairs := map[[2]string]bool{}
	for i, l := range t.Links {
		f := fmt.Sprintf("links[%d]", i)
		if !v.regions[l.A] {
			v.bad(f+".a", "unknown region %q", l.A)
		}
		if !v.regions[l.B] {
			v.bad(f+".b", "unknown region %q", l.B)
		}
		if l.A == l.B {
			v.bad(f, "links region %q to itself", l.A)
		}
		k := pair(l.A, l.B)
		if pairs[k] {
			v.bad(f, "duplicate link %s/%s", l.A, l.B)
		}
		pairs[k] = true
		if l.RTT < 0 || l.Jitter < 0 {
			v.bad(f+".rtt", "negative delay")
		}
		if l.Loss < 0 || l.Loss >= 1 {
			v.bad(f+".loss", "%v is not in [0, 1)", l.Loss)
		}
	}
	for i, a := range t.Regions {
		for _, b := range t.Regions[i+1:] {
			if a.Name != b.Name && !pairs[pair(a.Name, b.Name)] {
				v.bad("links", "no link between %q and %q (the RTT matrix must be complete)", a.Name, b.Name)
			}
		}
	}
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// RegionNames lists the regions in file order.
func (t Topology) RegionNames() []string {
	names := make([]string, len(t.Regions))
	for i, r := range t.Regions {
		names[i] = r.Name
	}
	return names
}

// Region returns the named region.
func (t Topology) Region(name string) (Region, bool) {
	for _, r := range t.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// Link returns the link between a and b (in either order).
func (t Topology) Link(a, b string) (Link, bool) {
	for _, l := range t.Links {
		if pair(l.A, l.B) == pair(a, b) {
			return l, true
		}
	}
	return Link{}, false
}

// RTT returns the round-trip time between a and b; 0 inside a region.
func (t Topology) RTT(a, b string) time.Duration {
	l, _ := t.Link(a, b)
	return time.Duration(l.RTT)
}

// StandbyFor lists the regions whose standby is region: those whose ingest
// region mirrors.
func (t Topology) StandbyFor(region string) []string {
	var out []string
	for _, r := range t.Regions {
		if r.Standby == region {
			out = append(out, r.Name)
		}
	}
	return out
}

// Home returns partition p's home region in strict mode.
func (t Topology) Home(p int) string {
	if r, ok := t.Homes[strconv.Itoa(p)]; ok {
		return r
	}
	if len(t.Regions) == 0 {
		return ""
	}
	return t.Regions[p%len(t.Regions)].Name
}

// HomePartitions lists the partitions whose home is region.
func (t Topology) HomePartitions(region string) []int {
	var ps []int
	for p := range t.Partitions {
		if t.Home(p) == region {
			ps = append(ps, p)
		}
	}
	return ps
}

// StreamReplicas is the replica count of region r's streams.
func (t Topology) StreamReplicas(r Region) int {
	if t.Replicas != 0 {
		return t.Replicas
	}
	if len(r.Cores) >= 3 {
		return 3
	}
	return 1
}

// JSON returns t as indented JSON, the file format Load reads.
func (t Topology) JSON() []byte {
	b, _ := json.MarshalIndent(t, "", "  ")
	return append(b, '\n')
}
