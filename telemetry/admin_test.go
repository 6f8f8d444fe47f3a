package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/onceplane/onceplane/devcert"
)

// TestAdminTokenRefusals: with a token configured, /metrics and extra routes
// refuse a call without it or with a wrong one; health checks stay open.
func TestAdminTokenRefusals(t *testing.T) {
	a, err := StartAdmin(AdminOptions{Addr: "127.0.0.1:0", Metrics: NewMetrics(), Token: "s3cret",
		Routes: []Route{{Path: "/status", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })}}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(t.Context())
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", "http://"+a.Addr()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", 401}, {"/metrics", "Bearer wrong", 401}, {"/metrics", "s3cret", 401},
		{"/status", "", 401}, {"/metrics", "Bearer s3cret", 200}, {"/status", "Bearer s3cret", 200},
		{"/healthz", "", 200}, {"/readyz", "", 200},
	} {
		if got := get(c.path, c.auth); got != c.want {
			t.Errorf("GET %s with %q: %d, want %d", c.path, c.auth, got, c.want)
		}
	}
}

// TestAdminOverTLS: with a certificate the admin port speaks HTTPS only, so
// the bearer token never crosses the network in clear (issue 11, item 7).
func TestAdminOverTLS(t *testing.T) {
	files, err := devcert.Generate(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := StartAdmin(AdminOptions{Addr: "127.0.0.1:0", Metrics: NewMetrics(), Token: "s3cret",
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(t.Context())
	if resp, err := http.Get("http://" + a.Addr() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served /metrics")
		}
	}
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://"+strings.Replace(a.Addr(), "127.0.0.1", "localhost", 1)+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("HTTPS with the CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS /metrics: %s", resp.Status)
	}
}
