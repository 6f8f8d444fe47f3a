package wan

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/onceplane/onceplane/core"
)

// maxGatewayHello bounds what the link reads to learn where a connection
// comes from: a NATS CONNECT line or a TLS ClientHello.
const maxGatewayHello = 64 << 10

// errHelloRead stops the TLS handshake once the ClientHello is read.
var errHelloRead = errors.New("client hello read")

// GatewayOf reads what a NATS gateway sends first on a connection it
// dialed and names the region it comes from: the one its TLS ClientHello
// offers as core.GatewayProtocol, or the "gateway" of its CONNECT when
// it has no TLS. It returns every byte it read from r, to be forwarded
// before the rest. A connection that names no region is an error.
func GatewayOf(ctx context.Context, r io.Reader) (region string, read []byte, err error) {
	rec := &recorder{r: r}
	br := bufio.NewReaderSize(io.LimitReader(rec, maxGatewayHello), maxGatewayHello)
	first, err := br.Peek(1)
	if err != nil {
		return "", rec.buf, fmt.Errorf("gateway hello: %w", err)
	}
	if first[0] == 0x16 { // a TLS handshake record
		region, err = helloRegion(ctx, br)
		return region, rec.buf, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", rec.buf, fmt.Errorf("gateway connect: %w", err)
	}
	body, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("CONNECT "))
	if !ok {
		return "", rec.buf, errors.New("gateway connect: not a CONNECT")
	}
	var c struct {
		Gateway string `json:"gateway"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return "", rec.buf, fmt.Errorf("gateway connect: %w", err)
	}
	if c.Gateway == "" {
		return "", rec.buf, errors.New("gateway connect: names no gateway")
	}
	return c.Gateway, rec.buf, nil
}

// helloRegion parses a TLS ClientHello from r (Go's own parser, stopped
// before anything is written back) and returns the region its ALPN names.
func helloRegion(ctx context.Context, r io.Reader) (string, error) {
	var protos []string
	srv := tls.Server(helloConn{r: r}, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		protos = h.SupportedProtos
		return nil, errHelloRead
	}})
	if err := srv.HandshakeContext(ctx); !errors.Is(err, errHelloRead) {
		return "", fmt.Errorf("gateway tls hello: %w", err)
	}
	prefix := core.GatewayProtocol("")
	for _, p := range protos {
		if region, ok := strings.CutPrefix(p, prefix); ok && region != "" {
			return region, nil
		}
	}
	return "", fmt.Errorf("gateway tls hello: no %s<region> protocol offered (%q)", prefix, protos)
}

// recorder keeps every byte read through it.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.buf = append(c.buf, p[:n]...)
	return n, err
}

// helloConn is a read-only net.Conn for parsing a ClientHello: what the
// TLS server would write back (an alert) goes nowhere.
type helloConn struct{ r io.Reader }

func (c helloConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (helloConn) Write(p []byte) (int, error)      { return len(p), nil }
func (helloConn) Close() error                     { return nil }
func (helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (helloConn) SetDeadline(time.Time) error      { return nil }
func (helloConn) SetReadDeadline(time.Time) error  { return nil }
func (helloConn) SetWriteDeadline(time.Time) error { return nil }
