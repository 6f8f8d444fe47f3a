package streams_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestValidateHomes: every partition has exactly one home, in range; a
// partition homed nowhere counts only once every region is known.
func TestValidateHomes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		homes    map[string][]int
		complete bool
		want     string // "" for valid, else a fragment of the error
	}{
		{"each one home", map[string][]int{"a": {0, 2}, "b": {1, 3}}, true, ""},
		{"order and repeats do not matter", map[string][]int{"a": {2, 0, 2}, "b": {3, 1}}, true, ""},
		{"homed twice", map[string][]int{"a": {0, 1}, "b": {1, 2, 3}}, true, "partition 1 homed in a and b"},
		{"homed nowhere", map[string][]int{"a": {0}, "b": {1}}, true, "partitions 2,3 homed nowhere"},
		{"nowhere yet, a region unknown", map[string][]int{"a": {0}, "b": {1}}, false, ""},
		{"out of range", map[string][]int{"a": {0, 1, 2, 3, 4}}, false, "a homes partition 4 of 4"},
		{"negative", map[string][]int{"a": {-1, 0, 1, 2, 3}}, true, "a homes partition -1 of 4"},
	} {
		err := streams.ValidateHomes(4, tc.homes, tc.complete)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !errors.Is(err, streams.ErrHomesConflict) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestHomesChangeOnlyByMove: provisioning refuses to home a partition a
// peer's home stream already homes, and to change a region's existing
// home partitions (new sources would start at the origin's first message,
// or at the home stream's last-message time: events decided twice or
// skipped); the same homes in another order are no change.
func TestHomesChangeOnlyByMove(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	strict := func(r string, home ...int) streams.Config {
		peers := map[string][]string{"a": {"b"}, "b": {"a"}}[r]
		return streams.Config{Names: streams.Names{Region: r}, Partitions: 4, Memory: true, Peers: peers, Home: home}
	}
	// Own streams first (the home streams source both regions' ingest).
	for _, r := range []string{"a", "b"} {
		if err := streams.Provision(ctx, js, strict(r).Own()); err != nil {
			t.Fatal(err)
		}
	}
	if err := streams.Provision(ctx, js, strict("a", 0, 3)); err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(ctx, js, strict("b", 1, 3)); !errors.Is(err, streams.ErrHomesConflict) {
		t.Fatalf("b homing a's partition 3: %v, want %v", err, streams.ErrHomesConflict)
	}
	if err := streams.Provision(ctx, js, strict("b", 1)); !errors.Is(err, streams.ErrHomesConflict) {
		t.Fatalf("partition 2 homed nowhere: %v, want %v", err, streams.ErrHomesConflict)
	}
	if err := streams.Provision(ctx, js, strict("b", 2, 1)); err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(ctx, js, strict("a", 3, 0)); err != nil {
		t.Fatalf("a's homes in another order: %v", err)
	}
	// With a third region not provisioned yet, nothing is homed nowhere
	// for sure: the change itself is refused.
	moved := strict("a", 0)
	moved.Peers = []string{"b", "c"}
	if err := streams.Provision(ctx, js, moved); !errors.Is(err, streams.ErrHomesChanged) {
		t.Fatalf("a dropping partition 3: %v, want %v", err, streams.ErrHomesChanged)
	}
	// Refused before anything changed: a's home stream still sources 0 and 3.
	s, err := js.Stream(ctx, strict("a").HomeShard(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.CachedInfo().Config.Sources[0].SubjectTransforms); got != 4 {
		t.Errorf("a's home stream's first source has %d transforms, want 4 (partitions 0 and 3)", got)
	}
}
