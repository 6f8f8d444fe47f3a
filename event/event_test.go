package event

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	cases := []struct {
		id   string
		want error
	}{
		{"abc-123_XYZ", nil},
		{"", ErrMissingID},
		{strings.Repeat("a", MaxIDLen), nil},
		{strings.Repeat("a", MaxIDLen+1), ErrIDTooLong},
		{"a.b", ErrIDCharset},
		{"a b", ErrIDCharset},
		{"a*", ErrIDCharset},
		{">", ErrIDCharset},
		{"caf\xc3\xa9", ErrIDCharset},
		{"a\x00", ErrIDCharset},
	}
	for _, c := range cases {
		if err := ValidateID(c.id); !errors.Is(err, c.want) {
			t.Errorf("ValidateID(%q) = %v, want %v", c.id, err, c.want)
		}
	}
}

// TestPartitionMatchesNATS pins the FNV-1a mapping to values computed by
// nats-server's partition(4,1) transform (see jetstream/streams tests for the
// end-to-end check against a live server).
func TestPartitionStable(t *testing.T) {
	if Partition("x", 0) != 0 {
		t.Fatal("n=0 must map to 0")
	}
	seen := map[int]int{}
	for i := 0; i < 10000; i++ {
		seen[Partition(strings.Repeat("k", i%7)+string(rune('a'+i%26))+string(rune('0'+i%10)), 8)]++
	}
	if len(seen) != 8 {
		t.Fatalf("partitions used: %v", seen)
	}
}

func TestCheck(t *testing.T) {
	id := "order-42"
	p := Partition(id, 16)
	h, err := Check(DefaultTenant, id, 10, p, 16, Limits{})
	if err != nil || h != HashID(id) {
		t.Fatalf("Check valid: %v", err)
	}
	// Another tenant's same ID is another event (issue 11, finding 3), in
	// the same partition.
	if h2, err := Check("acme", id, 10, p, 16, Limits{}); err != nil || h2 == h || h2 != HashID("acme."+id) {
		t.Fatalf("Check of tenant acme: %v %v", h2, err)
	}
	if _, err := Check("ac.me", id, 10, p, 16, Limits{}); !errors.Is(err, ErrTenant) {
		t.Fatalf("bad tenant: %v", err)
	}
	if _, err := Check(DefaultTenant, id, 10, (p+1)%16, 16, Limits{}); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("misrouted: %v", err)
	}
	if _, err := Check(DefaultTenant, id, 100, p, 16, Limits{MaxPayload: 99}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if Reason(errors.Join(ErrTooLarge)) != "payload-too-large" {
		t.Fatal("reason")
	}
}

// oracle is the producer contract written apart from the code: the reason
// an event is refused ("" when it is accepted), in the order the edge checks
// (the ID, then the payload size, then the routing), and the partition the
// ID belongs to (FNV-1a 32 of its bytes, modulo n, spelled out here).
func oracle(tenant, id string, payloadLen, p, n, maxPayload int) (reason string, part int) {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	if n > 0 {
		part = int(h % uint32(n))
	}
	switch {
	case !tenantChars.MatchString(tenant) || len(tenant) > 64:
		return "invalid-tenant", part
	case id == "":
		return "missing-id", part
	case len(id) > 128:
		return "id-too-long", part
	case !idChars.MatchString(id):
		return "id-invalid-charset", part
	case payloadLen > maxPayload:
		return "payload-too-large", part
	case p != part:
		return "misrouted", part
	}
	return "", part
}

// idChars: printable ASCII (0x21-0x7e) but '*' (0x2a), '.' (0x2e) and '>' (0x3e).
var idChars = regexp.MustCompile(`^[!-)+-\-/-=?-~]+$`)

// tenantChars: letters, digits, '-' and '_'.
var tenantChars = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// oracleKey is the key of a valid event: the bare ID in the default
// tenant, "<tenant>.<id>" in any other.
func oracleKey(tenant, id string) string {
	if tenant == "default" {
		return id
	}
	return tenant + "." + id
}

// FuzzCheck compares Check with the oracle: a valid event is accepted with
// its hash, an invalid one refused with the oracle's reason. Each input is
// also checked on the partition the oracle says the ID belongs to, so that
// valid IDs are accepted, not merely invalid ones refused.
func FuzzCheck(f *testing.F) {
	f.Add("default", "order-1", 10, 3, 0)
	f.Add("acme", "order-1", 10, 3, 0)
	f.Add("default", "", 0, 0, 0)
	f.Add("a.b", "x", 0, 0, 0)
	f.Add("", "x", 0, 0, 0)
	f.Add(strings.Repeat("t", 65), "x", 0, 0, 0)
	f.Add("default", "a.b.c", 1<<20, 7, 0)
	f.Add("default", "a>b", 1, 0, 0)
	f.Add("default", "a*", 1, 0, 0)
	f.Add("default", "tab\there", 1, 0, 0)
	f.Add("default", "caf\xc3\xa9", 1, 0, 0)
	f.Add("default", "\x7f", 1, 0, 0)
	f.Add("default", "!#$%&'()+,-/0123456789:;<=?@AZ[\\]^_`az{|}~", 65536, 0, 0)
	f.Add("default", strings.Repeat("k", 128), 65537, 0, 0)
	f.Add("default", strings.Repeat("k", 129), 0, 0, 0)
	f.Add("default", "big-payload", 100, 0, 99)
	f.Fuzz(func(t *testing.T, tenant, id string, payloadLen, p, maxPayload int) {
		if payloadLen < 0 || payloadLen > 1<<30 || maxPayload < 0 || maxPayload > 1<<30 {
			return
		}
		const n = 16
		lim := Limits{MaxPayload: maxPayload}
		max := maxPayload
		if max == 0 {
			max = DefaultMaxPayload
		}
		_, part := oracle(tenant, id, payloadLen, p, n, max)
		for _, p := range []int{p, part} {
			want, _ := oracle(tenant, id, payloadLen, p, n, max)
			h, err := Check(tenant, id, payloadLen, p, n, lim)
			switch {
			case want == "" && err != nil:
				t.Fatalf("Check(%q, %q, %d, p%d) refused a valid event: %v", tenant, id, payloadLen, p, err)
			case want == "" && h != HashID(oracleKey(tenant, id)):
				t.Fatalf("Check(%q, %q) hash %v, want the hash of %q", tenant, id, h, oracleKey(tenant, id))
			case want != "" && err == nil:
				t.Fatalf("Check(%q, %d, p%d) accepted an event the contract refuses (%s)", id, payloadLen, p, want)
			case want != "" && Reason(err) != want:
				t.Fatalf("Check(%q, %d, p%d): reason %q (%v), want %q", id, payloadLen, p, Reason(err), err, want)
			}
		}
	})
}
