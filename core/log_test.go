package core

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestPeerConnectionErrorsAreWarnings: during a WAN cut every gateway
// redial logged an ERROR line that looked like a failure of the product;
// failed route and gateway connections are warnings (saying NATS redials),
// and other server errors stay errors.
func TestPeerConnectionErrorsAreWarnings(t *testing.T) {
	var buf bytes.Buffer
	a := &slogAdapter{l: slog.New(slog.NewTextHandler(&buf, nil))}
	a.Errorf("Error connecting to %s gateway %q (%s) at %s (attempt %v): %v", "explicit", "eu-west", "127.0.0.1:7222", "127.0.0.1:7222", 3, "EOF")
	a.Errorf("%s - gid:%d - %q - TLS %s handshake error: %v", "127.0.0.1:50000", 7, "eu-west", "gateway", "EOF")
	a.Errorf("Error trying to connect to route (attempt %v): %v", 2, "connection refused")
	a.Errorf("JetStream failed to store a msg on stream '%s > %s': %v", "$G", "onceplane-us-east-in", "disk full")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines logged, want 4:\n%s", len(lines), buf.String())
	}
	for i, l := range lines[:3] {
		if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "redials") {
			t.Errorf("line %d not a warning that explains itself: %s", i, l)
		}
	}
	if !strings.Contains(lines[3], "level=ERROR") {
		t.Errorf("a storage failure was not logged as an error: %s", lines[3])
	}
}
