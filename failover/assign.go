// Package failover decides partition ownership: a pure, deterministic
// function of membership (rendezvous hashing), the per-edge plan of which
// partitions to acquire and release when membership changes, and nothing
// else. Safety never rests on it: the claim log's conditional appends
// decide who may write. Gossip and this package only decide who should.
package failover

import (
	"slices"

	"github.com/zeebo/xxh3"
)

// Owner returns the member that should own partition p: the member with the
// highest rendezvous score for (member, p). Members must be unique; nil when
// there are none. Adding a member moves only the partitions it now wins;
// removing one moves only the partitions it owned.
func Owner(members []string, p int) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		if s := score(m, p); best == "" || s > bestScore || (s == bestScore && m > best) {
			best, bestScore = m, s
		}
	}
	return best
}

func score(member string, p int) uint64 {
	var buf [8]byte
	b := append(buf[:0], byte(p), byte(p>>8), byte(p>>16), byte(p>>24))
	return xxh3.HashString(member) ^ xxh3.Hash(b)*0x9e3779b97f4a7c15 ^ xxh3.HashString(member+string(b))
}

// Assign returns the owner of each of n partitions: rendezvous hashing
// with bounded loads. Every (member, partition) pair gets a rendezvous
// score; pairs are taken greedily from the highest score down, a partition
// going to the first member that still holds fewer than ceil(n/members). No
// member owns more than that, and a join or leave moves little more than
// the partitions that must move (TestMovement reports by how much).
func Assign(members []string, n int) []string { return AssignSome(members, n, nil) }

// AssignSome is Assign restricted to the partitions in parts (nil means all
// n): the others get no owner, and loads are bounded by ceil(len(parts)/members).
// A strict-mode region shares only its home partitions among its edges.
func AssignSome(members []string, n int, parts []int) []string {
	out := make([]string, n)
	if parts == nil {
		parts = make([]int, n)
		for p := range parts {
			parts[p] = p
		}
	}
	if len(members) == 0 || len(parts) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	limit := (len(parts) + len(ms) - 1) / len(ms)
	type pair struct {
		s uint64
		p int
		m int
	}
	pairs := make([]pair, 0, len(parts)*len(ms))
	for _, p := range parts {
		if p < 0 || p >= n {
			continue
		}
		for i, m := range ms {
			pairs = append(pairs, pair{score(m, p), p, i})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		switch {
		case a.s != b.s:
			if a.s > b.s {
				return -1
			}
			return 1
		case a.p != b.p:
			return a.p - b.p
		}
		return a.m - b.m
	})
	load := make([]int, len(ms))
	left := len(parts)
	for _, pr := range pairs {
		if out[pr.p] != "" || load[pr.m] >= limit {
			continue
		}
		out[pr.p] = ms[pr.m]
		load[pr.m]++
		if left--; left == 0 {
			break
		}
	}
	return out
}

// OwnedSome returns the partitions of n (or of parts, as AssignSome) that
// member should own, in order.
func OwnedSome(members []string, n int, parts []int, member string) []int {
	var ps []int
	for p, o := range AssignSome(members, n, parts) {
		if o == member {
			ps = append(ps, p)
		}
	}
	return ps
}

// Plan is what one member must change to match an assignment.
type Plan struct {
	Acquire, Release []int
}

// Diff returns what a member owning have must do to own want.
func Diff(have, want []int) Plan {
	var pl Plan
	for _, p := range want {
		if !slices.Contains(have, p) {
			pl.Acquire = append(pl.Acquire, p)
		}
	}
	for _, p := range have {
		if !slices.Contains(want, p) {
			pl.Release = append(pl.Release, p)
		}
	}
	return pl
}
