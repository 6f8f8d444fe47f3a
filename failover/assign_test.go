package failover

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

func members(n int) []string {
	var ms []string
	for i := 0; i < n; i++ {
		ms = append(ms, fmt.Sprintf("edge-%d", i))
	}
	return ms
}

func TestDeterministicAndOrderFree(t *testing.T) {
	ms := members(5)
	a := Assign(ms, 64)
	shuffled := append([]string(nil), ms...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if !reflect.DeepEqual(a, Assign(shuffled, 64)) {
		t.Fatal("assignment depends on member order")
	}
	if Owner(nil, 3) != "" {
		t.Fatal("owner without members")
	}
}

// TestBalance: no member owns more than ceil(P/N) partitions.
func TestBalance(t *testing.T) {
	for _, p := range []int{1, 7, 16, 32, 64, 256} {
		for n := 1; n <= 9; n++ {
			ms := members(n)
			counts := map[string]int{}
			for _, o := range Assign(ms, p) {
				if o == "" {
					t.Fatalf("P=%d N=%d: unowned partition", p, n)
				}
				counts[o]++
			}
			for m, c := range counts {
				if c > (p+n-1)/n {
					t.Fatalf("P=%d N=%d: %s owns %d > ceil(P/N)", p, n, m, c)
				}
			}
		}
	}
}

// maxExtraMoves is how many partitions (of 64) a join or a leave moves
// beyond those that must move, at worst. Measured over 600,000 random
// memberships of 1 to 9 members (joins and leaves): 12. It is an empirical
// bound, not a proven one; docs/ARCHITECTURE.md quotes it.
const maxExtraMoves = 12

// TestMovement: a join moves the partitions the joiner must take (and a
// leave the leaver's share) plus at most maxExtraMoves more, over 3,000
// memberships. It reports the worst excess seen.
func TestMovement(t *testing.T) {
	const P = 64
	r := rand.New(rand.NewPCG(3, 4))
	worstJoin, worstLeave := 0, 0
	for trial := 0; trial < 3000; trial++ {
		n := 1 + r.IntN(8)
		var ms []string
		for i := 0; i <= n; i++ {
			ms = append(ms, fmt.Sprintf("e%d-%d", trial, i))
		}
		// Join: ms[n] joins ms[:n].
		before, after := Assign(ms[:n], P), Assign(ms, P)
		moved, must := 0, 0
		for p := range before {
			if before[p] != after[p] {
				moved++
			}
			if after[p] == ms[n] {
				must++
			}
		}
		worstJoin = max(worstJoin, moved-must)
		if moved-must > maxExtraMoves {
			t.Fatalf("join of 1 to %d moved %d partitions, %d had to: %d extra > %d", n, moved, must, moved-must, maxExtraMoves)
		}
		// Leave: one of the n+1 leaves.
		k := r.IntN(n + 1)
		rest := append(append([]string(nil), ms[:k]...), ms[k+1:]...)
		left := Assign(rest, P)
		moved, must = 0, 0
		for p := range after {
			if after[p] != left[p] {
				moved++
			}
			if after[p] == ms[k] {
				must++
			}
		}
		worstLeave = max(worstLeave, moved-must)
		if moved-must > maxExtraMoves {
			t.Fatalf("leave of 1 of %d moved %d partitions, %d had to: %d extra > %d", n+1, moved, must, moved-must, maxExtraMoves)
		}
	}
	t.Logf("worst partitions moved beyond those that must move (P=64, 3,000 memberships): join %d, leave %d (bound %d)", worstJoin, worstLeave, maxExtraMoves)
}

func TestDiff(t *testing.T) {
	pl := Diff([]int{1, 2, 3}, []int{2, 3, 4})
	if !reflect.DeepEqual(pl, Plan{Acquire: []int{4}, Release: []int{1}}) {
		t.Fatalf("%+v", pl)
	}
}
