package telemetry

import (
	"net/http"
	"testing"
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
