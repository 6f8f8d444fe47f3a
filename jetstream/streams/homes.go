package streams

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// metaHome, on a region's home streams, lists the partitions homed in the
// region (strict mode), sorted and comma-separated.
const metaHome = "onceplane.home"

// ErrHomesChanged is returned when a region's home streams were made for
// other home partitions. A partition's home changes only by a move that
// starts its sources where the old home stopped: provisioning new sources
// starts them at the origin's first message (every event decided again in
// the new home) or, once the home stream has dropped its first message, at
// that stream's last-message time (events skipped).
var ErrHomesChanged = errors.New("home partitions differ from the existing home streams")

// ErrHomesConflict is returned when the regions' home partitions do not
// give every partition exactly one home: a partition homed twice is decided
// in both regions, one homed nowhere is never decided.
var ErrHomesConflict = errors.New("home partitions conflict across regions")

// partitionList is the metaHome value of partitions ps.
func partitionList(ps []int) string {
	ps = slices.Sorted(slices.Values(ps))
	ps = slices.Compact(ps)
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// homesOf reads the partitions a home stream's region homes (ok false for
// a stream made before they were recorded).
func homesOf(cfg jetstream.StreamConfig) (ps []int, ok bool) {
	h, ok := cfg.Metadata[metaHome]
	if !ok {
		return nil, false
	}
	for f := range strings.SplitSeq(h, ",") {
		if p, err := strconv.Atoi(f); err == nil {
			ps = append(ps, p)
		}
	}
	return ps, true
}

// sourcedHomes lists the partitions a home stream's sources carry (one
// shard's share of the region's homes).
func sourcedHomes(cfg jetstream.StreamConfig) string {
	var ps []int
	for _, src := range cfg.Sources {
		for _, t := range src.SubjectTransforms {
			if p := transformPartition(t); p >= 0 {
				ps = append(ps, p)
			}
		}
	}
	return partitionList(ps)
}

// homesChanged reports whether a home stream made as have carries other
// home partitions than want: by the recorded list, or for a stream made
// before it was recorded, by the partitions its sources carry.
func homesChanged(have, want jetstream.StreamConfig) (had, wants string, changed bool) {
	if h, ok := have.Metadata[metaHome]; ok {
		return h, want.Metadata[metaHome], h != want.Metadata[metaHome]
	}
	h, w := sourcedHomes(have), sourcedHomes(want)
	return h, w, h != w
}

// ValidateHomes checks the home partitions of each region (a region
// missing from homes is not known yet): no partition in [0, partitions)
// homed twice or out of range, and, when complete (every region known),
// none homed nowhere. It is pure.
func ValidateHomes(partitions int, homes map[string][]int, complete bool) error {
	by := map[int][]string{}
	var problems []string
	for _, r := range slices.Sorted(maps.Keys(homes)) {
		for _, p := range slices.Compact(slices.Sorted(slices.Values(homes[r]))) {
			if p < 0 || p >= partitions {
				problems = append(problems, fmt.Sprintf("%s homes partition %d of %d", r, p, partitions))
				continue
			}
			by[p] = append(by[p], r)
		}
	}
	var none []string
	for p := range partitions {
		switch rs := by[p]; {
		case len(rs) > 1:
			problems = append(problems, fmt.Sprintf("partition %d homed in %s", p, strings.Join(rs, " and ")))
		case len(rs) == 0 && complete:
			none = append(none, strconv.Itoa(p))
		}
	}
	if len(none) > 0 {
		problems = append(problems, "partitions "+strings.Join(none, ",")+" homed nowhere")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrHomesConflict, strings.Join(problems, "; "))
	}
	return nil
}

// CheckHomes validates c's home partitions against the home streams of
// the peers that have them (ValidateHomes; complete once every peer has).
// Regions that start at the same moment for the first time can miss each
// other's; the check runs again at every start.
// Provision calls it before it makes c's home streams.
func CheckHomes(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.withDefaults()
	homes := map[string][]int{c.Region: c.Home}
	moving := map[string][]int{} // a move under way counts at its new home
	record := func(region string, r HomeRecord) {
		homes[region] = r.Homes
		if r.Moving >= 0 {
			moving[r.MovingTo] = append(moving[r.MovingTo], r.Moving)
		}
	}
	if s, err := js.Stream(ctx, c.HomeShard(0)); err == nil {
		if r, ok := homeRecord(s.CachedInfo().Config); ok && r.Version > 0 {
			record(c.Region, r) // moved by command: the record is the assignment
		}
	}
	known := 1
	for _, peer := range c.Peers {
		name := c.peer(peer).HomeShard(0)
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("homes: region %s's home stream %s: %w", peer, name, err)
		}
		if r, ok := homeRecord(s.CachedInfo().Config); ok {
			record(peer, r)
			known++
		}
	}
	for r, ps := range moving {
		homes[r] = append(slices.Clone(homes[r]), ps...)
	}
	if err := ValidateHomes(c.Partitions, homes, known == len(c.Peers)+1); err != nil {
		return fmt.Errorf("region %s: %w", c.Region, err)
	}
	return nil
}
