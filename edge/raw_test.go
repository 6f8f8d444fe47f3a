package edge_test

import (
	"bufio"
	"net"
	"os"
	"strings"
	"testing"
)

// rawDial opens a plain TCP connection speaking the NATS protocol by hand.
func rawDial(t *testing.T, url string) *os.File {
	t.Helper()
	addr := strings.TrimPrefix(url, "nats://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n")); err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	t.Cleanup(func() { f.Close() })
	return f
}
