package edge

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
)

// TestFirstDeliveryGapChecked: a fresh consumer's first delivery must be
// consumer sequence 1. When the answer to the first pull is lost, the next
// one starts above 1, and acknowledging it with AckAll would acknowledge
// the lost deliveries unhandled.
func TestFirstDeliveryGapChecked(t *testing.T) {
	for _, c := range []struct {
		last, d uint64
		gap     bool
	}{{0, 1, false}, {0, 6, true}, {5, 6, false}, {5, 8, true}, {5, 3, true}, {5, 5, true}} {
		if err := checkDelivery(c.last, c.d); errors.Is(err, errGap) != c.gap {
			t.Errorf("delivery %d after %d: %v, want gap=%v", c.d, c.last, err, c.gap)
		}
	}
}

type fakeMsg struct {
	jetstream.Msg
	hdr  nats.Header
	data []byte
}

func (m fakeMsg) Headers() nats.Header { return m.hdr }
func (m fakeMsg) Data() []byte         { return m.data }

// TestDeadLetterCarriesOnlyItsOwnHeaders: the producer's headers are data
// in a dead letter, never headers; the letter fits the stream however
// large the event was.
func TestDeadLetterCarriesOnlyItsOwnHeaders(t *testing.T) {
	hdr := nats.Header{}
	hdr.Set("Nats-Expected-Stream", "onceplane-local-in")
	hdr.Set("Nats-Msg-Id", "evil\x00id")
	hdr.Set("Nats-TTL", "1s")
	hdr.Set("X-Big", strings.Repeat("v", 10_000))
	d := deadMsg{m: fakeMsg{hdr: hdr, data: make([]byte, 1<<20)}, id: "evil\x00id", seq: 9, reason: "missing-id", detail: "no\r\nid"}
	for _, minimal := range []bool{false, true} {
		m := deadLetterMsg("onceplane.local.dlq.0", "local", 0, d, 1<<20, minimal)
		for k := range m.Header {
			if k != event.HeaderMsgID && !strings.HasPrefix(k, "Onceplane-") {
				t.Errorf("minimal=%v: producer header %q", minimal, k)
			}
		}
		if m.Header.Get(event.HeaderMsgID) != "dlq-local-0-9" {
			t.Errorf("msg id %q", m.Header.Get(event.HeaderMsgID))
		}
		size := len(m.Data)
		for k, vs := range m.Header {
			for _, v := range vs {
				size += len(k) + len(v) + 4
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Errorf("header %s not sanitised: %q", k, v)
				}
			}
		}
		if size > 1<<20-4096 || m.Header.Get(HeaderTruncated) != "true" {
			t.Errorf("minimal=%v: letter %d bytes, truncated=%q", minimal, size, m.Header.Get(HeaderTruncated))
		}
	}
}
