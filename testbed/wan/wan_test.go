package wan

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/internal/poll"
)

// eventually polls cond until it holds, failing the test when within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll.Until(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// echoServer runs a TCP echo server on loopback. stop closes it and its
// connections and waits for its goroutines; it also runs when the test ends.
func echoServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		once  sync.Once
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				_, _ = io.Copy(c, c)
				_ = c.Close()
			})
		}
	})
	stop = func() {
		once.Do(func() {
			_ = ln.Close()
			mu.Lock()
			for c := range conns {
				_ = c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func listen(t *testing.T, o LinkOptions) *Link {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.Seed == 0 {
		o.Seed = 1
	}
	l, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip sends msg through c to the echo server and reads it back.
func roundTrip(t *testing.T, c net.Conn, msg string) time.Duration {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(start)
	if string(buf) != msg {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
	return rtt
}

// readClosed asserts that c's peer closes it (EOF or reset) within 2 s.
func readClosed(t *testing.T, c net.Conn, wantEOF bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	switch {
	case err == nil:
		t.Fatal("read data from a connection that should be closed")
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("connection not closed within 2s")
	case wantEOF && !errors.Is(err, io.EOF):
		t.Fatalf("read: %v, want EOF", err)
	}
}

// TestDelay: a 40 ms link adds 80 ms to a round trip, a 0 ms link adds
// nothing visible, and 1 MiB with jitter arrives intact and in order.
func TestDelay(t *testing.T) {
	echo, _ := echoServer(t)
	slow := listen(t, LinkOptions{Name: "slow", Targets: []string{echo}, Delay: 40 * time.Millisecond})
	c := dial(t, slow.Addr())
	for i := range 3 {
		rtt := roundTrip(t, c, "ping")
		t.Logf("40ms link: round trip %d took %v", i, rtt)
		if rtt < 80*time.Millisecond || rtt >= 230*time.Millisecond {
			t.Fatalf("round trip %v, want [80ms, 230ms)", rtt)
		}
	}

	fast := listen(t, LinkOptions{Targets: []string{echo}})
	if fast.name != fast.Addr() {
		t.Fatalf("default name %q, want the address %q", fast.name, fast.Addr())
	}
	c = dial(t, fast.Addr())
	roundTrip(t, c, "warm")
	if rtt := roundTrip(t, c, "ping"); rtt >= 40*time.Millisecond {
		t.Fatalf("0ms link: round trip %v", rtt)
	}

	jit := listen(t, LinkOptions{Targets: []string{echo}, Delay: time.Millisecond, Jitter: 5 * time.Millisecond})
	c = dial(t, jit.Addr())
	payload := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("1 MiB payload corrupted or reordered")
	}
	eventually(t, 2*time.Second, "byte counters", func() bool {
		s := jit.Stats()
		return s.BytesUp == 1<<20 && s.BytesDown == 1<<20
	})
}

// TestSchedule: jitter never reorders (delivery times never decrease) and
// every chunk waits at least the delay.
func TestSchedule(t *testing.T) {
	l := listen(t, LinkOptions{Targets: []string{"127.0.0.1:1"}, Delay: 10 * time.Millisecond, Jitter: 20 * time.Millisecond, Seed: 7})
	now := time.Now()
	var prev time.Time
	spread := map[time.Duration]bool{}
	for i := range 1000 {
		arrival := now.Add(time.Duration(i) * time.Millisecond)
		at := l.schedule(arrival, prev)
		if at.Before(prev) {
			t.Fatalf("chunk %d delivered at %v before the previous one at %v", i, at, prev)
		}
		if d := at.Sub(arrival); d < 10*time.Millisecond || (d >= 30*time.Millisecond && at != prev) {
			t.Fatalf("chunk %d delayed %v, want [10ms, 30ms) or held behind the previous chunk", i, d)
		}
		spread[at.Sub(arrival)/time.Millisecond] = true
		prev = at
	}
	if len(spread) < 10 {
		t.Fatalf("jitter barely varies: %d distinct delays", len(spread))
	}
}

// TestSetDelay: a live change applies to later traffic on an open connection.
func TestSetDelay(t *testing.T) {
	echo, _ := echoServer(t)
	l := listen(t, LinkOptions{Targets: []string{echo}})
	c := dial(t, l.Addr())
	roundTrip(t, c, "warm")
	if rtt := roundTrip(t, c, "ping"); rtt >= 40*time.Millisecond {
		t.Fatalf("before SetDelay: round trip %v", rtt)
	}
	l.SetDelay(50*time.Millisecond, 0)
	if rtt := roundTrip(t, c, "ping"); rtt < 100*time.Millisecond || rtt >= 250*time.Millisecond {
		t.Fatalf("after SetDelay(50ms): round trip %v, want [100ms, 250ms)", rtt)
	}
	l.SetDelay(0, 0)
	if rtt := roundTrip(t, c, "ping"); rtt >= 40*time.Millisecond {
		t.Fatalf("after SetDelay(0): round trip %v", rtt)
	}
}

// TestCutHeal: Cut closes live connections and refuses new ones until Heal.
func TestCutHeal(t *testing.T) {
	echo, _ := echoServer(t)
	l := listen(t, LinkOptions{Targets: []string{echo}, Delay: 5 * time.Millisecond})
	live := dial(t, l.Addr())
	roundTrip(t, live, "before")
	if s := l.Stats(); s.Conns != 1 || s.Accepted != 1 {
		t.Fatalf("stats before cut: %+v", s)
	}

	l.Cut()
	if !l.IsCut() {
		t.Fatal("IsCut false after Cut")
	}
	readClosed(t, live, false)
	if s := l.Stats(); s.Conns != 0 {
		t.Fatalf("live conns after cut: %+v", s)
	}
	refused := dial(t, l.Addr())
	readClosed(t, refused, true)
	eventually(t, 2*time.Second, "refused counted", func() bool { return l.Stats().Refused >= 1 })

	l.Heal()
	if l.IsCut() {
		t.Fatal("IsCut true after Heal")
	}
	again := dial(t, l.Addr())
	roundTrip(t, again, "after")
	s := l.Stats()
	if s.Accepted != 2 || s.Refused != 1 || s.Conns != 1 {
		t.Fatalf("stats after heal: %+v", s)
	}
}

// TestLoss: with every chunk lost, each direction stalls LossStall.
func TestLoss(t *testing.T) {
	echo, _ := echoServer(t)
	l := listen(t, LinkOptions{Targets: []string{echo}, Loss: 1, LossStall: 100 * time.Millisecond})
	c := dial(t, l.Addr())
	if rtt := roundTrip(t, c, "ping"); rtt < 200*time.Millisecond || rtt >= 350*time.Millisecond {
		t.Fatalf("round trip %v with loss 1, want [200ms, 350ms)", rtt)
	}
	l.SetLoss(0)
	if rtt := roundTrip(t, c, "ping"); rtt >= 40*time.Millisecond {
		t.Fatalf("round trip %v after SetLoss(0)", rtt)
	}
}

// TestTargetsFallback: a refusing first target is skipped; when none
// answers the client is closed and the failure counted.
func TestTargetsFallback(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	echo, _ := echoServer(t)

	l := listen(t, LinkOptions{Targets: []string{deadAddr, echo}})
	roundTrip(t, dial(t, l.Addr()), "fallback")
	if s := l.Stats(); s.DialErrors != 0 {
		t.Fatalf("stats: %+v", s)
	}

	none := listen(t, LinkOptions{Targets: []string{deadAddr}})
	readClosed(t, dial(t, none.Addr()), false)
	eventually(t, 2*time.Second, "dial error counted", func() bool { return none.Stats().DialErrors == 1 })
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []LinkOptions{
		{},
		{Targets: []string{"127.0.0.1:1"}, Loss: 1.5},
		{Targets: []string{"127.0.0.1:1"}, Delay: -time.Second},
		{Targets: []string{"127.0.0.1:1"}, Listen: "127.0.0.1:99999"},
	} {
		if l, err := Listen(o); err == nil {
			_ = l.Close()
			t.Errorf("Listen(%+v) succeeded", o)
		} else {
			t.Log(err)
		}
	}
}

// TestCloseEndsEverything: Close closes clients (including ones with data
// still in the delay queue), stops listening, and leaves no goroutines.
func TestCloseEndsEverything(t *testing.T) {
	baseline := runtime.NumGoroutine()
	echo, stopEcho := echoServer(t)
	l, err := Listen(LinkOptions{Targets: []string{echo}, Delay: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 3 {
		c := dial(t, l.Addr())
		if _, err := io.WriteString(c, "queued"); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	eventually(t, 2*time.Second, "three live conns", func() bool { return l.Stats().Conns == 3 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, c := range clients {
		readClosed(t, c, false)
		_ = c.Close()
	}
	if c, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Fatal("link still accepts after Close")
	}
	stopEcho()
	eventually(t, 2*time.Second, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= baseline+1
	})
	t.Logf("goroutines: baseline %d, now %d", baseline, runtime.NumGoroutine())
}

// TestOnlyTheLinksRegion: a link that carries one region's gateways
// refuses a connection from another region's gateway (which learned the
// link's address by NATS gossip) before forwarding a byte of it, and
// forwards its own region's, with TLS (ALPN) or without (CONNECT).
func TestOnlyTheLinksRegion(t *testing.T) {
	echo, _ := echoServer(t)
	connect := func(region string) string { return fmt.Sprintf("CONNECT {\"gateway\":%q,\"name\":\"x\"}\r\n", region) }
	plain := listen(t, LinkOptions{Targets: []string{echo}, From: "us-east"})
	roundTrip(t, dial(t, plain.Addr()), connect("us-east")+"PING\r\n")
	for _, first := range []string{connect("eu-west"), "PING\r\n", "CONNECT {}\r\n"} {
		c := dial(t, plain.Addr())
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
		readClosed(t, c, false)
	}
	eventually(t, 2*time.Second, "three refused", func() bool { return plain.Stats().Refused == 3 })

	// hello runs a TLS handshake offering region's protocol through a
	// fresh link; the echo target answers with garbage, so only what the
	// link let through counts.
	hello := func(region string) Stats {
		l := listen(t, LinkOptions{Targets: []string{echo}, From: "us-east"})
		c := dial(t, l.Addr())
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "core", NextProtos: []string{"h2"}}
		if region != "" {
			cfg.NextProtos = append(cfg.NextProtos, core.GatewayProtocol(region))
		}
		_ = tls.Client(c, cfg).Handshake()
		eventually(t, 2*time.Second, "the hello judged", func() bool { s := l.Stats(); return s.BytesUp > 0 || s.Refused > 0 })
		return l.Stats()
	}
	if s := hello("us-east"); s.Refused != 0 || s.BytesUp < 100 {
		t.Errorf("us-east's hello: %+v, want forwarded", s)
	}
	for _, r := range []string{"eu-west", ""} {
		if s := hello(r); s.Refused != 1 || s.BytesUp != 0 {
			t.Errorf("hello from %q: %+v, want refused with nothing forwarded", r, s)
		}
	}
}

// FuzzGatewayOf: whatever a client sends first, GatewayOf names a region
// only without error, and what it returns as read is what it was given.
func FuzzGatewayOf(f *testing.F) {
	f.Add([]byte("CONNECT {\"gateway\":\"us-east\"}\r\n"))
	f.Add([]byte("CONNECT {}\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		region, read, err := GatewayOf(ctx, bytes.NewReader(in))
		if (err == nil) != (region != "") {
			t.Fatalf("region %q, err %v", region, err)
		}
		if !bytes.HasPrefix(in, read) {
			t.Fatalf("read %q is not a prefix of the input", read)
		}
	})
}
