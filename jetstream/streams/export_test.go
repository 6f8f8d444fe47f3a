package streams

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
)

// LastsOf is lastsOf for the tests: "region/p" -> the last origin sequence.
func LastsOf(ctx context.Context, nc *nats.Conn, stream string, parts []int, regions []string, upTo uint64) (map[string]uint64, error) {
	lasts, err := lastsOf(ctx, nc, stream, parts, regions, upTo)
	out := map[string]uint64{}
	for k, l := range lasts {
		out[k.region+"/"+strconv.Itoa(k.p)] = l.seq
	}
	return out, err
}
