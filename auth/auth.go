// Package auth defines who may do what on a onceplane deployment's NATS
// servers: one user per role, each with subject permissions, and the
// passwords kept in files (never on a command line).
//
//	producer  the default tenant's producers (producer-<t>: tenant t's):
//	          may publish events to its tenant's ingest subjects
//	          (onceplane.*.in.<tenant>.*) and receive its publish acks on
//	          its own inbox prefix; nothing else: it cannot read claim logs,
//	          call the JetStream API, or delete anything
//	edge-<r>  the edges of region r: may consume r's streams, append to
//	          r's claim log, publish r's outputs, dead letters and
//	          conflicts; nothing of another region, and none of the
//	          operators' JetStream API (streams' create, update, purge,
//	          delete; consumer pause or reset; step-downs, snapshots)
//	failover-<s>  the failover edges of region s, which run the partitions
//	          of a region s stands by for once it is failed over
//	          (edge -failover-of): read s's copies of that region's ingest
//	          and claim log, append its claims there, and read s's own
//	          claims and write s's conflicts, dead letters and outputs as an
//	          edge-<s> does; s's everyday edges have none of the failover
//	          rights, so a leaked edge-<s> password reaches no other
//	          region's data
//	admin     everything: operators and the core nodes' own provisioning
//
// Producers are in their own account (ProducerAccount) and reach the
// ingest subjects through an import; edges and admins share the account
// the streams live in (AppAccount).
package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Role is a kind of client.
type Role string

// The roles.
const (
	Producer Role = "producer"
	Edge     Role = "edge"
	// FailoverEdge is a region's failover edges (FailoverUser).
	FailoverEdge Role = "failover"
	Admin        Role = "admin"
	// System is the operators' user in the system account (SystemAccount):
	// server monitoring over NATS ($SYS.REQ.>, e.g. `nats server report
	// jetstream`). It sees no application subjects, and the other roles see
	// none of its.
	System Role = "sys"
	// Core is core nodes to each other: the password routes and gateways
	// authenticate with (core.Options.PeerPassword). Not a client user.
	Core Role = "core"
)

// SystemAccount names the NATS system account the System user belongs to.
const SystemAccount = "SYS"

// AppAccount is the account of edges and admins, where the streams live;
// ProducerAccount the producers'. Producers reach the ingest subjects
// through a service import from AppAccount, so JetStream's publish
// acknowledgement returns to the reply subject the producer set in
// ProducerAccount, where no stream listens: a reply set to a claim subject
// cannot write into a claim log (NATS checks the subject a client publishes
// to, never its reply subject).
const (
	AppAccount      = "ONCEPLANE"
	ProducerAccount = "PRODUCERS"
)

// IngestSubjects are the subjects producers publish events to.
const IngestSubjects = "onceplane.*.in.>"

// AccountsConfig is the NATS configuration of the accounts Users puts the
// roles in (core.Options.Accounts): AppAccount with JetStream, exporting
// the ingest subjects as a service, and ProducerAccount importing them.
// ProducerAccount maps the ingest subjects of before tenants to the default
// tenant's (streams.LegacyIngestMapping), before permissions are checked;
// the core adds AppAccount's mappings itself (core.Options.Mappings, then
// that one), in an order a configuration block does not keep.
func AccountsConfig() string {
	src, dest := streams.LegacyIngestMapping()
	return fmt.Sprintf(`accounts {
  %s: { jetstream: enabled, exports: [ { service: %q } ] }
  %s: { imports: [ { service: { account: %s, subject: %q } } ], mappings: { %q: %q } }
}`, AppAccount, IngestSubjects, ProducerAccount, AppAccount, IngestSubjects, src, dest)
}

// Roles lists the roles that have a user of their own, unscoped: every
// deployment has one of each (Edge users are per region, EdgeUser; the
// unscoped producer is the default tenant's, and other tenants have their
// own, ProducerUser).
func Roles() []Role { return []Role{Producer, Admin, System, Core} }

// User is one NATS user: a role and, for an edge, the region it is
// confined to, for a producer its tenant. Its name is the role, or
// role-scope ("edge-us-east", "producer-acme").
type User struct {
	Role Role
	// Scope is an edge user's region or a producer user's tenant (none:
	// the default tenant). Other roles have none.
	Scope string
}

// ProducerUser is the user of tenant's producers ("" or
// event.DefaultTenant: the unscoped producer user). It may publish only
// under its tenant's ingest subjects, so its events live in its tenant's
// ID space: no other tenant can claim its IDs first.
func ProducerUser(tenant string) User {
	if tenant == event.DefaultTenant {
		tenant = ""
	}
	return User{Role: Producer, Scope: tenant}
}

// Tenant is a producer user's tenant.
func (u User) Tenant() string {
	if u.Scope == "" {
		return event.DefaultTenant
	}
	return u.Scope
}

// EdgeUser is the user of region's edges ("" means "local", as in
// streams.Names). Its permissions name only that region's streams and
// subjects: a leaked edge password cannot touch another region.
func EdgeUser(region string) User {
	if region == "" {
		region = "local"
	}
	return User{Role: Edge, Scope: region}
}

// FailoverUser is the user of region's failover edges: those that run, in
// region, the partitions of a region it stands by for once that region is
// failed over (edge.Options.Host). Its permissions are an edge's of region
// (not its claims: it appends none of region's own) and the standby
// streams and failover claim subjects of the regions region stands by for
// (Regions.StandbyFor), which region's everyday edge user lacks.
func FailoverUser(region string) User {
	if region == "" {
		region = "local"
	}
	return User{Role: FailoverEdge, Scope: region}
}

// Name is the user name on the wire and the password file's stem.
func (u User) Name() string {
	if u.Scope == "" {
		return string(u.Role)
	}
	return string(u.Role) + "-" + u.Scope
}

func (u User) String() string { return u.Name() }

// User is r's unscoped user (the producer, admin, system or core user).
func (r Role) User() User { return User{Role: r} }

// ErrUnknownUser reports a user name that names no role, or an edge
// without a region.
var ErrUnknownUser = errors.New("unknown user")

// ParseUser parses a user name (User.Name). The unscoped "edge" of
// earlier releases is refused: an edge credential now names its region.
func ParseUser(name string) (User, error) {
	role, scope, scoped := strings.Cut(name, "-")
	u := User{Role: Role(role), Scope: scope}
	switch {
	case scoped && !validScope(scope):
		return User{}, fmt.Errorf("%w %q: bad scope", ErrUnknownUser, name)
	case (u.Role == Edge || u.Role == FailoverEdge) && validScope(scope):
		return u, nil
	case (u.Role == Edge || u.Role == FailoverEdge) && scope == "":
		return User{}, fmt.Errorf("%w %q: an edge user names its region (%s-<region>)", ErrUnknownUser, name, u.Role)
	case u.Role == Producer && scope == event.DefaultTenant:
		return User{}, fmt.Errorf("%w %q: the default tenant's producer is %q", ErrUnknownUser, name, Producer)
	case u.Role == Producer && scoped:
		return u, nil
	case slices.Contains(Roles(), u.Role) && scope == "":
		return u, nil
	}
	return User{}, fmt.Errorf("%w %q", ErrUnknownUser, name)
}

// validScope: a region is one subject token of [A-Za-z0-9_-].
func validScope(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Credentials maps user names (User.Name) to passwords.
type Credentials map[string]string

// Password is u's password ("" when c has none).
func (c Credentials) Password(u User) string { return c[u.Name()] }

// Permissions returns u's subject permissions (nil for Admin and System:
// everything in their account). An edge's name its region's streams, every
// shard's: shards is the region's shard count (zero means 1).
//
// f says which regions the user's region stands by for, and which stands
// by for it, and the other regions (Regions).
func Permissions(u User, shards int, f Regions) *server.Permissions {
	switch u.Role {
	case Producer:
		// Its tenant's ingest subjects only. The legacy subjects of
		// before tenants are mapped to the default tenant's before this
		// check, so the default producer needs no more.
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"onceplane.*.in." + u.Tenant() + ".*"}},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(u) + ".>"}},
		}
	case Edge:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: edgePublish(streams.Names{Region: u.Scope, Shards: shards}, f, false)},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(u) + ".>"}},
		}
	case FailoverEdge:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: edgePublish(streams.Names{Region: u.Scope, Shards: shards}, f, true)},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(u) + ".>"}},
		}
	default:
		return nil
	}
}

// edgePublish is what region's edges may publish: their claims, dead
// letters, outputs and conflicts, acks of their region's consumers, and the
// JetStream API calls an edge makes, each on its region's streams only.
// Everything else is refused by omission: creating, updating, purging or
// deleting streams, deleting messages, pausing, resetting or unpinning
// consumers, leader step-downs, snapshots and restores, peer and server
// moves, the meta group, account info; and every other region's streams.
//
// failover makes them a failover edge's instead (FailoverUser): no claims
// of the region's own, but the failover's claims of each region it stands
// by for and its standby streams.
func edgePublish(n streams.Names, f Regions, failover bool) []string {
	allow := []string{n.Prefix() + ".dlq.*", n.Prefix() + ".out.*", n.Prefix() + ".outpos.*.*", n.Prefix() + ".conflicts.>"}
	if !failover {
		allow = append(allow, n.Prefix()+".claims.*")
	}
	if f.Standby != "" && !failover {
		// Whether the standby took this region's log over (looked at
		// before an edge owns anything): its stream's configuration only.
		allow = append(allow, "$JS.API.STREAM.INFO."+streams.Names{Region: f.Standby}.StandbyClaimShard(n.Region, 0))
	}
	names := n.Streams()
	if !failover {
		// The tail: the other regions' claim logs, read only, by batch
		// direct gets (what this region's xclaims stream holds of them,
		// sooner after a WAN heal).
		for _, peer := range f.Peers {
			pn := streams.Names{Region: peer, Shards: MaxStandbyShards}
			for s := range MaxStandbyShards {
				allow = append(allow, "$JS.API.DIRECT.GET."+pn.ClaimShard(s))
			}
		}
	}
	if failover {
		for _, of := range f.StandbyFor {
			// A failover's claims, stored by the promoted stream as of's.
			allow = append(allow, n.Prefix()+".claims."+of+".*")
			for s := range MaxStandbyShards {
				names = append(names, n.StandbyShard(of, s), n.StandbyClaimShard(of, s), n.StandbyHomeShard(of, s))
			}
		}
	}
	for _, s := range names {
		allow = append(allow,
			"$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.MSG.GET."+s,
			"$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+".>",
			"$JS.API.CONSUMER.INFO."+s+".>", "$JS.API.CONSUMER.DELETE."+s+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+s+".>",
			"$JS.API.CONSUMER.NAMES."+s, "$JS.API.CONSUMER.LIST."+s,
			"$JS.ACK."+s+".>", "$JS.FC."+s+".>")
	}
	return allow
}

// Regions is what a region's edges may do with other regions: read their
// claim logs, and run their partitions around a region failover.
type Regions struct {
	// Peers are the other regions: the edges may read their claim logs
	// (batch direct gets, the tail of edge.Options.NoTail) on the first
	// MaxStandbyShards shards of each.
	Peers []string
	// StandbyFor are the regions this one stands by for: its edges may run
	// their partitions after a failover (edge.Options.Host), on the
	// standby streams of the first MaxStandbyShards shards of each.
	StandbyFor []string
	// Standby is the region standing by for this one: its edges may read
	// the configuration of its copy of their claim log
	// (edge.Options.Standby).
	Standby string
}

// MaxStandbyShards is how many shards of a stood-by region a standby's
// edges may reach (Permissions): the permissions are set before the
// region's shard count can be read from its streams.
const MaxStandbyShards = 16

// InboxPrefix is the reply-subject prefix user u must use
// (nats.CustomInboxPrefix; ClientOptions sets it): each producer and each
// region's edges may subscribe only under their own, so a producer cannot
// read the replies an edge's pull requests get (events, claim records) by
// subscribing to _INBOX.>, nor one region's edges another's. Admin clients
// use the default, _INBOX.
func InboxPrefix(u User) string {
	if u.Role != Producer && u.Role != Edge && u.Role != FailoverEdge {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX." + u.Name()
}

// ClientOptions are the connection options of user u with password pw:
// the user name and its inbox prefix.
func ClientOptions(u User, pw string) []nats.Option {
	opts := []nats.Option{nats.UserInfo(u.Name(), pw)}
	if u.Role == Producer || u.Role == Edge || u.Role == FailoverEdge {
		opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(u)))
	}
	return opts
}

// Users returns the users of a core node of region: every client user in
// c except other regions' edges (Core is not a client), so an edge's
// password is refused at connect by every other region's cores. The server
// gets bcrypt hashes, never the passwords. Each user's account is named
// (the core matches it by name): producers in ProducerAccount, edges and
// admins in AppAccount (give the server AccountsConfig), the System user
// in SystemAccount (give the server that account as its system account,
// core.Options.SystemAccount).
//
// region names the node's region and its shard count (the edge's
// permissions name every shard's streams), f its failover relations.
func Users(c Credentials, region streams.Names, f Regions) ([]*server.User, error) {
	own, failover := EdgeUser(region.Region), FailoverUser(region.Region)
	var us []*server.User
	for _, name := range slices.Sorted(maps.Keys(c)) {
		u, err := ParseUser(name)
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if u.Role == Core || u.Role == Edge && u != own || u.Role == FailoverEdge && u != failover || c[name] == "" {
			continue
		}
		// The lowest cost: the passwords are random 192-bit strings
		// (Generate), so no cost makes guessing them from the hash any
		// harder, while every client connection pays it (at the default
		// cost, connects under load exceed the 2 s auth timeout).
		hash, err := bcrypt.GenerateFromPassword([]byte(c[name]), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("credentials: %s: %w", name, err)
		}
		su := &server.User{Username: name, Password: string(hash), Permissions: Permissions(u, region.Shards, f)}
		switch u.Role {
		case System:
			su.Account = server.NewAccount(SystemAccount)
		case Producer:
			su.Account = server.NewAccount(ProducerAccount)
		default:
			su.Account = server.NewAccount(AppAccount)
		}
		us = append(us, su)
	}
	return us, nil
}

const passwordExt = ".password"

// Load reads every <user>.password in dir. It needs one of each of Roles;
// edge users are optional (a core of a region without one admits no edge).
func Load(dir string) (Credentials, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"+passwordExt))
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	c := Credentials{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), passwordExt)
		if _, err := ParseUser(name); err != nil {
			return nil, fmt.Errorf("credentials: %s: %w", f, err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if c[name] = strings.TrimSpace(string(b)); c[name] == "" {
			return nil, fmt.Errorf("credentials: %s is empty", f)
		}
	}
	for _, r := range Roles() {
		if c[string(r)] == "" {
			return nil, fmt.Errorf("credentials: %s%s: %w", filepath.Join(dir, string(r)), passwordExt, os.ErrNotExist)
		}
	}
	return c, nil
}

// EdgeUsers returns the edge users of regions: each region's everyday
// edges' (EdgeUser) and its failover edges' (FailoverUser).
func EdgeUsers(regions ...string) []User {
	us := make([]User, 0, 2*len(regions))
	for _, r := range regions {
		us = append(us, EdgeUser(r), FailoverUser(r))
	}
	return us
}

// Generate writes a random password for each of Roles and each of extra
// (edges of regions, tenants' producers) that has none in dir (files
// 0600), and returns all the credentials dir holds.
func Generate(dir string, extra ...User) (Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	var users []User
	for _, r := range Roles() {
		users = append(users, User{Role: r})
	}
	for _, u := range append(users, extra...) {
		if _, err := ParseUser(u.Name()); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		p := filepath.Join(dir, u.Name()+passwordExt)
		if _, err := os.Stat(p); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if err := os.WriteFile(p, []byte(Secret()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
	}
	return Load(dir)
}

// Secret returns a random 192-bit secret, hex-encoded.
func Secret() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux (Go 1.24+ crashes instead)
	}
	return hex.EncodeToString(b[:])
}
