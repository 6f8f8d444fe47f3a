package core_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/devcert"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestTLSEverywhere: with certificates configured, a 3-node region forms
// over mutually verified TLS routes (JetStream gets a meta leader), clients
// must speak TLS and trust the CA, and a client trusting another CA is
// refused.
func TestTLSEverywhere(t *testing.T) {
	files, err := devcert.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devcert.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsf := core.TLSFiles{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}
	ports := coretest.FreePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes := make([]*core.Node, 3)
	errs := make(chan error, 3)
	for i := range nodes {
		go func() {
			n, err := core.Start(ctx, core.Options{Name: fmt.Sprintf("tls-%d", i), Region: "secure", Port: -1, DataDir: t.TempDir(),
				ClusterPort: ports[i], Routes: routes, TLS: tlsf, MaxMemory: 64 << 20, MaxStore: 1 << 30, Logger: coretest.Quiet})
			nodes[i] = n
			errs <- err
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatalf("a TLS region did not form: %v", err)
		}
	}
	for _, n := range nodes {
		defer n.Shutdown()
	}
	url := nodes[0].ClientURL()
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("a plain-text client connected to a TLS core")
	}
	if nc, err := nats.Connect(url, nats.RootCAs(other.CA)); err == nil {
		nc.Close()
		t.Fatal("a client trusting another CA connected")
	}
	nc, err := nodes[0].Connect()
	if err != nil {
		t.Fatalf("TLS client with the CA: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
	// Only AEAD suites: a TLS 1.2 client offering CBC-SHA1 suites alone is
	// refused (issue 11, item 7); one offering an AEAD suite connects.
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(files.CA)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA: %v", err)
	}
	tls12 := func(suites ...uint16) *tls.Config {
		return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: suites}
	}
	if nc, err := nats.Connect(url, nats.Secure(tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA))); err == nil {
		nc.Close()
		t.Fatal("a TLS 1.2 client with CBC-SHA1 suites only connected")
	}
	nc12, err := nats.Connect(url, nats.Secure(tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)))
	if err != nil {
		t.Fatalf("a TLS 1.2 client with an AEAD suite: %v", err)
	}
	nc12.Close()
}

// TestMonitoringOnLoopbackByDefault: NATS monitoring has no authentication
// (/connz names users and addresses), so a core listening for clients on
// every interface still serves monitoring on loopback unless told otherwise
// (issue 11, item 5).
func TestMonitoringOnLoopbackByDefault(t *testing.T) {
	ports := coretest.FreePorts(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := core.Start(ctx, core.Options{Name: "mon", Host: "0.0.0.0", Port: ports[0], MonitorPort: ports[1], DataDir: t.TempDir(),
		MaxMemory: 64 << 20, MaxStore: 1 << 30, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if a := n.Server().MonitorAddr(); a == nil || !a.IP.IsLoopback() {
		t.Fatalf("monitoring listens on %v, want loopback", a)
	}
}
