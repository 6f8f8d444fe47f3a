package bloom

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

func h(i int) event.Hash { return event.HashID(fmt.Sprintf("id-%d", i)) }

func TestNoFalseNegativesWithinPeriod(t *testing.T) {
	p := 10 * time.Second
	f := New(Options{Period: p, ExpectedIDs: 10_000})
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < 10_000; i++ {
		at := t0.Add(time.Duration(i) * time.Millisecond)
		f.Add(h(i), at)
	}
	// Every ID still tests positive a full period after it was added.
	for i := 0; i < 10_000; i++ {
		at := t0.Add(time.Duration(i)*time.Millisecond + p)
		if !f.MayContain(h(i), at) {
			t.Fatalf("false negative for %d", i)
		}
	}
	fp := 0
	for i := 10_000; i < 20_000; i++ {
		if f.MayContain(h(i), t0.Add(p)) {
			fp++
		}
	}
	if fp > 300 {
		t.Fatalf("false-positive rate %d/10000", fp)
	}
	// Two periods later everything is gone.
	if f.MayContain(h(1), t0.Add(3*p)) {
		t.Fatal("remembered past two periods")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	f := New(Options{Period: time.Minute, ExpectedIDs: 1000})
	now := time.Unix(1_700_000_000, 0)
	for i := 0; i < 1000; i++ {
		f.Add(h(i), now)
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(Options{Period: time.Minute, ExpectedIDs: 1000})
	if _, err := g.ReadFrom(&buf); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if !g.MayContain(h(i), now) {
			t.Fatalf("snapshot lost %d", i)
		}
	}
	if _, err := g.ReadFrom(bytes.NewReader([]byte{1, 2, 3})); err == nil {
		t.Fatal("garbage snapshot accepted")
	}
}
