package cli

import (
	"net/http"
	"net/http/httptest"
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
