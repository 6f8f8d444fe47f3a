package cli

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestHealth(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer bad.Close()
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	gone.Close()
	for url, want := range map[string]int{ok.URL: 0, bad.URL: 1, gone.URL: 1} {
		if got := Health([]string{"-url", url, "-timeout", "1s"}, ""); got != want {
			t.Errorf("health %s = %d, want %d", url, got, want)
		}
	}
	if got := Health(nil, ok.URL); got != 0 {
		t.Errorf("default URL: %d", got)
	}
}

// TestHealthOverTLS: an admin port serving HTTPS is checked with its CA.
func TestHealthOverTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Health([]string{"-url", srv.URL, "-ca", ca, "-timeout", "1s"}, ""); got != 0 {
		t.Errorf("https with its CA: %d, want 0", got)
	}
	if got := Health([]string{"-url", srv.URL, "-timeout", "1s"}, ""); got != 1 {
		t.Errorf("https without its CA: %d, want 1", got)
	}
}

func TestRegions(t *testing.T) {
	r, err := Regions(" us=a:1,b:2 ; eu=c:3;")
	if err != nil || len(r.Names) != 2 || r.Names[0] != "us" || len(r.URLs["us"]) != 2 || r.URLs["eu"][0] != "c:3" {
		t.Fatalf("got %+v, %v", r, err)
	}
	for _, bad := range []string{"us", "=a:1", "us=", "us=a:1;us=b:2"} {
		if _, err := Regions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
