package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestGarbageOnPorts sends random bytes and malformed protocol to the core's
// client port and the edge's admin port: neither process crashes, and the
// edge still decides events afterwards.
func TestGarbageOnPorts(t *testing.T) {
	n := coretest.Start(t)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: 2, IngestDuplicates: -1}, true)
	admin := fmt.Sprintf("127.0.0.1:%d", coretest.FreePorts(t, 1)[0])
	e := r.edge("edge-g", "-sink", "nats", "-admin", admin)
	coretest.Eventually(t, 20*time.Second, "edge ready", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	coreAddr := strings.TrimPrefix(n.ClientURL(), "nats://")
	payloads := [][]byte{
		[]byte("PUB\r\n"), []byte("HPUB a 99999999999 1\r\n"), []byte("CONNECT {not json}\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"), []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
	}
	for i := 0; i < 20; i++ {
		b := make([]byte, 1+i*97)
		_, _ = rand.Read(b)
		payloads = append(payloads, b)
	}
	for _, addr := range []string{coreAddr, admin} {
		for _, p := range payloads {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			_, _ = c.Write(p)
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			c.Close()
		}
	}
	if e.Exited() {
		t.Fatal("edge exited after garbage")
	}
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after garbage: %v", err)
	}
	resp.Body.Close()
	if _, err := producer.New(r.js, "local").Publish(context.Background(), "after-garbage", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	r.ids, r.unique = []string{"after-garbage"}, 1
	coretest.Eventually(t, 20*time.Second, "event decided after garbage", func() bool { return r.outputCount() == 1 })
	r.checkOutputOnce()
}
