// Package auth defines who may do what on a onceplane deployment's NATS
// servers: one user per role, each with subject permissions, and the
// passwords kept in files (never on a command line).
//
//	producer  may publish events to ingest subjects (onceplane.*.in.>) and
//	          receive its publish acks; nothing else: it cannot read claim
//	          logs, call the JetStream API, or delete anything
//	edge      may use the JetStream API to consume, append claims, publish
//	          outputs, dead letters and conflicts; it may not create,
//	          update, purge or delete streams, delete messages, pause or
//	          reset consumers, step leaders down, snapshot or restore
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
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

// Role is a kind of client.
type Role string

// The roles.
const (
	Producer Role = "producer"
	Edge     Role = "edge"
	Admin    Role = "admin"
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
func AccountsConfig() string {
	return fmt.Sprintf(`accounts {
  %s: { jetstream: enabled, exports: [ { service: %q } ] }
  %s: { imports: [ { service: { account: %s, subject: %q } } ] }
}`, AppAccount, IngestSubjects, ProducerAccount, AppAccount, IngestSubjects)
}

// Roles lists every role.
func Roles() []Role { return []Role{Producer, Edge, Admin, System, Core} }

// Credentials maps each role to its password. The user name is the role.
type Credentials map[Role]string

// Permissions returns role's subject permissions (nil for Admin and System:
// everything in their account).
func Permissions(r Role) *server.Permissions {
	switch r {
	case Producer:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{IngestSubjects}},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(Producer) + ".>"}},
		}
	case Edge:
		return &server.Permissions{
			Publish: &server.SubjectPermission{
				Allow: []string{"$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "onceplane.*.claims.*", "onceplane.*.dlq.*", "onceplane.*.out.*", "onceplane.*.conflicts.>"},
				Deny: []string{"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
					"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.ACCOUNT.>",
					// Operators' tools an edge never uses: pausing or resetting a
					// consumer (another edge's pending grows unseen, or it skips),
					// unpinning, leader step-downs, snapshots and restores,
					// peer and server moves, the meta group.
					"$JS.API.CONSUMER.PAUSE.>", "$JS.API.CONSUMER.RESET.>", "$JS.API.CONSUMER.UNPIN.>",
					"$JS.API.STREAM.LEADER.STEPDOWN.>", "$JS.API.CONSUMER.LEADER.STEPDOWN.>",
					"$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>", "$JS.API.STREAM.PEER.>",
					"$JS.API.META.>", "$JS.API.SERVER.>"},
			},
			Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(Edge) + ".>"}},
		}
	default:
		return nil
	}
}

// InboxPrefix is the reply-subject prefix clients of role r must use
// (nats.CustomInboxPrefix; ClientOptions sets it): each role may subscribe
// only under its own, so a producer cannot read the replies an edge's pull
// requests get (events, claim records) by subscribing to _INBOX.>. Admin
// clients use the default, _INBOX.
func InboxPrefix(r Role) string {
	if r != Producer && r != Edge {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX." + string(r)
}

// ClientOptions are the connection options of a client of role r with
// password pw: the user and the role's inbox prefix.
func ClientOptions(r Role, pw string) []nats.Option {
	opts := []nats.Option{nats.UserInfo(string(r), pw)}
	if r == Producer || r == Edge {
		opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(r)))
	}
	return opts
}

// Users returns the server users for c: one per client role that has a
// password (Core is not a client). The server gets bcrypt hashes, never the
// passwords. Each user's account is named (the core matches it by name):
// the producer in ProducerAccount, edge and admin in AppAccount (give the
// server AccountsConfig), the System user in SystemAccount (give the server
// that account as its system account, core.Options.SystemAccount).
func Users(c Credentials) ([]*server.User, error) {
	var us []*server.User
	for _, r := range Roles() {
		if pw := c[r]; pw != "" && r != Core {
			// The lowest cost: the passwords are random 192-bit strings
			// (Generate), so no cost makes guessing them from the hash
			// any harder, while every client connection pays it (at the
			// default cost, connects under load exceed the 2 s auth timeout).
			hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			if err != nil {
				return nil, fmt.Errorf("credentials: %s: %w", r, err)
			}
			u := &server.User{Username: string(r), Password: string(hash), Permissions: Permissions(r)}
			switch r {
			case System:
				u.Account = server.NewAccount(SystemAccount)
			case Producer:
				u.Account = server.NewAccount(ProducerAccount)
			default:
				u.Account = server.NewAccount(AppAccount)
			}
			us = append(us, u)
		}
	}
	return us, nil
}

// Load reads <dir>/<role>.password for every role.
func Load(dir string) (Credentials, error) {
	c := Credentials{}
	for _, r := range Roles() {
		b, err := os.ReadFile(filepath.Join(dir, string(r)+".password"))
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if c[r] = strings.TrimSpace(string(b)); c[r] == "" {
			return nil, fmt.Errorf("credentials: %s.password is empty", r)
		}
	}
	return c, nil
}

// Generate writes a random password for every role missing one in dir
// (files 0600) and returns them all.
func Generate(dir string) (Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	for _, r := range Roles() {
		p := filepath.Join(dir, string(r)+".password")
		if _, err := os.Stat(p); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
	}
	return Load(dir)
}
