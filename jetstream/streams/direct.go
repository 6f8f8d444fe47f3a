package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// BatchEnd is how a batch direct get's answer ended.
type BatchEnd struct {
	// Status is "204" (end of batch) or "404" (nothing, or a message that
	// failed to load: Description tells).
	Status, Description string
	// Pending is, at a 204, how many matching messages the answer left
	// out (a batch or byte limit cut it short).
	Pending uint64
}

// DirectBatch sends one batch direct get to stream (req is the request:
// "next_by_subj" with "batch", "multi_last" with "up_to_seq", …), answered
// by the stream's servers or a mirror of it, and calls each for every
// message of the answer in order, until the end of the batch, within
// limit. Any other status than the end of the batch or not found (a 413
// for too many results, say) is an error.
func DirectBatch(ctx context.Context, nc *nats.Conn, stream string, req any, limit time.Duration, each func(*nats.Msg) error) (BatchEnd, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return BatchEnd{}, err
	}
	defer sub.Unsubscribe()
	body, err := json.Marshal(req)
	if err != nil {
		return BatchEnd{}, err
	}
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return BatchEnd{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return BatchEnd{}, fmt.Errorf("direct get %s: %w", stream, err)
		}
		if status := m.Header.Get("Status"); len(m.Data) == 0 && status != "" {
			end := BatchEnd{Status: status, Description: m.Header.Get("Description")}
			switch status {
			case "204", "404":
				end.Pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				return end, nil
			}
			return end, fmt.Errorf("direct get %s: status %s %s", stream, status, end.Description)
		}
		if err := each(m); err != nil {
			return BatchEnd{}, err
		}
	}
}
