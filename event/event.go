// Package event defines the producer contract: how an event's ID is carried,
// validated, hashed and mapped to a partition. It does no I/O.
package event

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/zeebo/xxh3"
)

// Header names used on the wire.
const (
	// HeaderID carries the event's ID: the producer contract.
	HeaderID = "Onceplane-Id"
	// HeaderMsgID is JetStream's de-duplication header. Before tenants it
	// carried the event's ID, and an event of the default tenant without
	// HeaderID is still read from it. New producers must not send it: the
	// ingest stream's Nats-Msg-Id window is one per region, shared by
	// every producer, so any producer could send another's ID first and
	// have the stream drop the real event as a duplicate. onceplane's own
	// streams (outputs, dead letters) use it, keyed by event key.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTenant carries an output's or a dead letter's tenant.
	HeaderTenant = "Onceplane-Tenant"
	// HeaderReason carries the DLQ reason.
	HeaderReason = "Onceplane-Reason"
	// HeaderPartition carries the partition an event was consumed from (DLQ, outputs).
	HeaderPartition = "Onceplane-Partition"
	// HeaderStreamSeq carries the ingest stream sequence (DLQ).
	HeaderStreamSeq = "Onceplane-Stream-Seq"
	// HeaderUncertain marks an output produced by an uncertain re-run.
	HeaderUncertain = "Onceplane-Uncertain"
	// HeaderPublished carries the producer's publish time (Unix nanoseconds),
	// for dedupe latency across regions. Optional.
	HeaderPublished = "Onceplane-Published"
)

// MaxIDLen is the longest event ID accepted, in bytes.
const MaxIDLen = 128

// DefaultTenant is the tenant of the producer user without one ("producer")
// and of events published before tenants. Its keys are the bare IDs, so the
// claims made before tenants keep deduplicating after the upgrade.
const DefaultTenant = "default"

// MaxTenantLen is the longest tenant name, in bytes.
const MaxTenantLen = 64

// Key is the identity dedupe works on: id within its tenant's ID space.
// The default tenant's is the bare ID; another tenant's is "<tenant>.<id>"
// (IDs and tenants hold no '.', so no two tenants' keys meet).
func Key(tenant, id string) string {
	if tenant == "" || tenant == DefaultTenant {
		return id
	}
	return tenant + "." + id
}

// Hash is the compact 128-bit identity of an event ID (XXH3-128 of its bytes).
// Claim logs store hashes, never raw IDs.
type Hash struct{ Hi, Lo uint64 }

// Hex is h as 32 lowercase hex digits, high half first: the conflict
// subject token of an ID.
func (h Hash) Hex() string {
	var b [16]byte
	for i := range 8 {
		b[i] = byte(h.Hi >> (56 - 8*i))
		b[8+i] = byte(h.Lo >> (56 - 8*i))
	}
	return hex.EncodeToString(b[:])
}

// HashID returns the stable 128-bit hash of an event ID.
func HashID(id string) Hash {
	u := xxh3.HashString128(id)
	return Hash{Hi: u.Hi, Lo: u.Lo}
}

// Partition returns the partition of id among n partitions. It is the same
// function as NATS's subject-transform partition(n,1) (FNV-1a 32 of the token,
// modulo n), so a stream transform and this code always agree.
func Partition(id string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// Validation errors. Each names a DLQ reason.
var (
	ErrMissingID   = errors.New("missing-id")
	ErrIDTooLong   = errors.New("id-too-long")
	ErrIDCharset   = errors.New("id-invalid-charset")
	ErrTooLarge    = errors.New("payload-too-large")
	ErrMisrouted   = errors.New("misrouted")
	ErrTenant      = errors.New("invalid-tenant")
	ErrHandlerFail = errors.New("handler-gave-up")
)

// ValidateID checks id against the contract: 1..MaxIDLen bytes of printable
// ASCII (0x21-0x7e) other than '.', '*' and '>', so that it is one NATS
// subject token.
func ValidateID(id string) error {
	if id == "" {
		return ErrMissingID
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %d bytes > %d", ErrIDTooLong, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x21 || c > 0x7e || c == '.' || c == '*' || c == '>' {
			return fmt.Errorf("%w: byte %#x at %d", ErrIDCharset, c, i)
		}
	}
	return nil
}

// ValidateTenant checks a tenant name: 1..MaxTenantLen bytes of
// [A-Za-z0-9_-], one subject token.
func ValidateTenant(t string) error {
	if t == "" || len(t) > MaxTenantLen {
		return fmt.Errorf("%w: %d bytes", ErrTenant, len(t))
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: byte %#x at %d", ErrTenant, c, i)
		}
	}
	return nil
}

// Limits bounds what an edge accepts. The zero value means the defaults.
type Limits struct {
	// MaxPayload is the largest payload accepted, in bytes. Zero means 64 KiB.
	MaxPayload int
}

// DefaultMaxPayload is Limits.MaxPayload's zero-value meaning.
const DefaultMaxPayload = 64 << 10

func (l Limits) maxPayload() int {
	if l.MaxPayload <= 0 {
		return DefaultMaxPayload
	}
	return l.MaxPayload
}

// Event is one validated event as the handler sees it.
type Event struct {
	ID string
	// Tenant is the ID space the event was published in (DefaultTenant
	// for events without one).
	Tenant    string
	Hash      Hash
	Partition int
	Data      []byte
	// Headers are the message headers as received (may be nil).
	Headers map[string][]string
	// StreamSeq is the ingest stream sequence.
	StreamSeq uint64
	// Uncertain is true when the event is re-run because an earlier owner
	// claimed it and may or may not have completed it.
	Uncertain bool
	// Epoch is the owner epoch of the edge handing the event over: a
	// transactional sink refuses an epoch older than the one that last
	// fenced it (edge.Transactional).
	Epoch uint64
	// Source names the input the event was consumed from, for a
	// transactional sink's positions; empty when the handler keeps none.
	Source string
}

// Key is the event's dedupe identity, Key(Tenant, ID).
func (e Event) Key() string { return Key(e.Tenant, e.ID) }

// Check validates an event of tenant consumed from partition p of n: its
// tenant, its ID, its size and its routing (the partition is the ID's,
// whatever the tenant). It returns the hash of the event's key.
func Check(tenant, id string, payloadLen, p, n int, lim Limits) (Hash, error) {
	if err := ValidateTenant(tenant); err != nil {
		return Hash{}, err
	}
	if err := ValidateID(id); err != nil {
		return Hash{}, err
	}
	if payloadLen > lim.maxPayload() {
		return Hash{}, fmt.Errorf("%w: %d bytes > %d", ErrTooLarge, payloadLen, lim.maxPayload())
	}
	if got := Partition(id, n); got != p {
		return Hash{}, fmt.Errorf("%w: id hashes to partition %d, consumed from %d", ErrMisrouted, got, p)
	}
	return HashID(Key(tenant, id)), nil
}

// Reason returns the short DLQ reason of a validation error.
func Reason(err error) string {
	for _, e := range []error{ErrMissingID, ErrIDTooLong, ErrIDCharset, ErrTooLarge, ErrMisrouted, ErrTenant, ErrHandlerFail} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "invalid"
}

// ByInput splits evs by input (Source and Partition), in order of first
// appearance: the indexes into evs of each group, in order. A
// transactional sink commits each group apart (an edge hands it one).
func ByInput(evs []Event) [][]int {
	type key struct {
		source    string
		partition int
	}
	var out [][]int
	at := map[key]int{}
	for i, ev := range evs {
		k := key{ev.Source, ev.Partition}
		j, ok := at[k]
		if !ok {
			j = len(out)
			at[k] = j
			out = append(out, nil)
		}
		out[j] = append(out[j], i)
	}
	return out
}
