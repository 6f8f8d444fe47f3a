package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A home stream that takes over another's messages (a promoted standby
// copy, a home stream made again from one at a failback) must source each
// home partition from each origin region after the last message of it the
// stream holds. nats-server resumes a source after the last message whose
// Nats-Stream-Source header names that source (its origin stream, filter
// and transforms), so a source made with other transforms than the one
// that delivered those messages would start over, at the origin's first
// message or at the stream's last-message time. A home moved by command
// has a source of its own in its home stream, so the sources cannot be
// derived from the homes. resumeSources reads them from the messages
// instead: the partitions whose last message from an origin came by one
// source are sourced together again, starting after that source's last
// origin sequence (it delivered in origin order, so every earlier message
// of its partitions is there); partitions the stream holds nothing of from
// an origin are sourced from its first message.

// sourcedLast is the last message of one origin region's events of one
// partition in a stream, by its Nats-Stream-Source header.
type sourcedLast struct {
	stream string // the origin stream the header names
	seq    uint64 // its sequence there
	source string // the delivering source: origin stream, filter, transforms
}

// lastKey names an origin region's events of a partition.
type lastKey struct {
	region string
	p      int
}

// partitionOfSubject reads an ingest subject onceplane.<region>.part.<p>[.<tenant>].
func partitionOfSubject(subj string) (string, int, bool) {
	f := strings.Split(subj, ".")
	if len(f) < 4 || f[0] != "onceplane" || f[2] != "part" {
		return "", 0, false
	}
	p, err := strconv.Atoi(f[3])
	if err != nil || p < 0 {
		return "", 0, false
	}
	return f[1], p, true
}

// errCutShort is a multi_last answer that left messages out (too many
// subjects, or too many bytes): asked again in smaller pieces.
var errCutShort = errors.New("answer cut short")

// lastsOf returns, for each origin region and partition of parts, the last
// message stream holds at or below upTo (0: its last), by batch direct gets
// of the last message per subject (multi_last), 32 partitions at a time,
// fewer when an answer is cut short (nats-server answers at most 1,024
// messages and 64 MiB): a partition alone is asked region by region
// (regions).
func lastsOf(ctx context.Context, nc *nats.Conn, stream string, parts []int, regions []string, upTo uint64) (map[lastKey]sourcedLast, error) {
	out := map[lastKey]sourcedLast{}
	var ask func(subjects []string) error
	ask = func(subjects []string) error {
		req := map[string]any{"multi_last": subjects, "batch": 1024}
		if upTo > 0 {
			req["up_to_seq"] = upTo
		}
		got := map[lastKey]sourcedLast{}
		end, err := DirectBatch(ctx, nc, stream, req, 10*time.Second, func(m *nats.Msg) error {
			region, p, ok := partitionOfSubject(m.Header.Get("Nats-Subject")) // the reply's subject is the inbox
			if !ok {
				return nil // not an event
			}
			h := m.Header.Get(StreamSourceHeader)
			origin, seq := SourceHeader(h)
			if origin == "" {
				return fmt.Errorf("%s holds %s without a source header", stream, m.Subject)
			}
			// The source: origin stream, filter and transforms (fields 0,
			// 2 and 3; the transform lists are joined by form feeds).
			f := strings.Split(h, " ")
			source := origin
			if len(f) >= 4 {
				source = strings.Join([]string{f[0], f[2], f[3]}, " ")
			}
			k := lastKey{region, p}
			if cur, ok := got[k]; !ok || seq > cur.seq {
				got[k] = sourcedLast{stream: origin, seq: seq, source: source}
			}
			return nil
		})
		switch {
		case err == nil && end.Status == "404" && end.Description != "No Results":
			err = fmt.Errorf("%s: %s", end.Status, end.Description) // a message failed to load
		case err == nil && end.Pending > 0, err != nil && end.Status == "413":
			err = errCutShort
		}
		if errors.Is(err, errCutShort) && len(subjects) > 1 {
			half := len(subjects) / 2
			if err := ask(subjects[:half]); err != nil {
				return err
			}
			return ask(subjects[half:])
		}
		if err != nil {
			return err
		}
		for k, l := range got {
			if cur, ok := out[k]; !ok || l.seq > cur.seq {
				out[k] = l
			}
		}
		return nil
	}
	for chunk := range slices.Chunk(parts, 32) {
		var subjects []string
		for _, p := range chunk {
			for _, r := range regions {
				part := "onceplane." + r + ".part." + strconv.Itoa(p)
				subjects = append(subjects, part, part+".*")
			}
		}
		if err := ask(subjects); err != nil {
			return nil, fmt.Errorf("last events in %s: %w", stream, err)
		}
	}
	return out, nil
}

// resumeSources returns the sources of rc's home shard t (its home
// partitions there, from every region of rc) that resume after the last
// message of each origin region's events of each partition that stream
// holds (see above). read names the stream a source of region r's ingest
// shard reads (the standby's mirror for a lost region, same sequences).
func resumeSources(ctx context.Context, nc *nats.Conn, stream string, rc Config, t int, read func(region string, shard int) string) ([]*jetstream.StreamSource, error) {
	var parts []int
	for _, p := range rc.Home {
		if rc.ShardOf(p) == t {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	lasts, err := lastsOf(ctx, nc, stream, parts, append([]string{rc.Region}, rc.Peers...), 0)
	if err != nil {
		return nil, err
	}
	var srcs []*jetstream.StreamSource
	for _, r := range append([]string{rc.Region}, rc.Peers...) {
		rn := rc.peer(r)
		type group struct {
			shard int
			start uint64 // the last origin sequence delivered (0: from the first)
			parts []int
		}
		groups := map[string]*group{}
		var order []string
		for _, p := range parts {
			key := "quiet " + strconv.Itoa(rn.ShardOf(p))
			var start uint64
			if l, ok := lasts[lastKey{r, p}]; ok {
				key, start = l.source, l.seq
			}
			g, ok := groups[key]
			if !ok {
				g = &group{shard: rn.ShardOf(p)}
				groups[key] = g
				order = append(order, key)
			}
			g.start = max(g.start, start)
			g.parts = append(g.parts, p)
		}
		for _, key := range order {
			g := groups[key]
			src := &jetstream.StreamSource{Name: read(r, g.shard), OptStartSeq: g.start + 1}
			for _, p := range g.parts {
				src.SubjectTransforms = append(src.SubjectTransforms, homeTransforms(rn, p)...)
			}
			srcs = append(srcs, src)
		}
	}
	return srcs, nil
}
