package dedupe

import (
	"errors"
	"testing"
	"time"
)

func TestForeignBytesAreNotCorruptRecords(t *testing.T) {
	if _, err := Decode([]byte(`{"stream":"onceplane-us-east-in","seq":7}`)); !errors.Is(err, ErrForeign) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a JetStream ack: %v, want ErrForeign (an ErrCorrupt)", err)
	}
	good, err := Record{Kind: KindClaim, Epoch: 1, Writer: "w"}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(good[:len(good)-1]); err == nil || errors.Is(err, ErrForeign) {
		t.Fatalf("a truncated record: %v, want corrupt, not foreign", err)
	}
	s := New(Options{Window: time.Hour})
	s.Foreign(9)
	if s.LastSeq() != 9 {
		t.Fatalf("last seq %d after a foreign message at 9", s.LastSeq())
	}
}
