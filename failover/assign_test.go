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

// TestMovement: a join or a leave moves few partitions beyond those that
// must move (P/(N+1) to a joiner; the leaver's share). The bound is loose
// on purpose; the test reports the actual excess.
func TestMovement(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	worst := 0
	for trial := 0; trial < 300; trial++ {
		const P = 64
		n := 1 + r.IntN(8)
		var ms []string
		for i := 0; i <= n; i++ {
			ms = append(ms, fmt.Sprintf("e%d-%d", trial, i))
		}
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
		if excess := moved - must; excess > worst {
			worst = excess
		}
		if moved > must+P/4 {
			t.Fatalf("join of 1 to %d moved %d partitions, %d had to", n, moved, must)
		}
	}
	t.Logf("worst partitions moved beyond those a join must move (P=64): %d", worst)
}

func TestDiff(t *testing.T) {
	pl := Diff([]int{1, 2, 3}, []int{2, 3, 4})
	if !reflect.DeepEqual(pl, Plan{Acquire: []int{4}, Release: []int{1}}) {
		t.Fatalf("%+v", pl)
	}
}
