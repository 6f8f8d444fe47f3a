package streams

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ReaderInactive is the inactive threshold of onceplane's ordered
// consumers (claim-log replays, remote-claim followers). An ordered
// consumer outlives its reader by that threshold (nats.go's default: 5
// minutes): a takeover wave replaying thousands of partitions, and
// retrying those that fail, would fill a stream's consumer limit with
// dead readers. Readers delete theirs when done (DropConsumer); the
// threshold covers one that could not.
const ReaderInactive = time.Minute

// DropConsumer deletes a reader's consumer once it is done with it, best
// effort, within a few seconds whatever the caller's context.
func DropConsumer(js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
}
