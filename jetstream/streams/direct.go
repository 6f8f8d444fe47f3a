package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// DirectBatch sends one batch direct get to stream (req is the request:
// "next_by_subj" with "batch", "multi_last" with "up_to_seq", …), answered
// by the stream's servers or a mirror of it, and calls each for every
// message of the answer in order, until the end of the batch, within
// limit. A stream holding nothing the request names is an empty answer.
func DirectBatch(ctx context.Context, nc *nats.Conn, stream string, req any, limit time.Duration, each func(*nats.Msg) error) error {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("direct get %s: %w", stream, err)
		}
		if status := m.Header.Get("Status"); len(m.Data) == 0 && status != "" {
			switch status {
			case "204", "404": // end of batch; nothing matched
				return nil
			}
			return fmt.Errorf("direct get %s: status %s %s", stream, status, m.Header.Get("Description"))
		}
		if err := each(m); err != nil {
			return err
		}
	}
}
