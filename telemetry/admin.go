package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Admin serves /metrics, /healthz and /readyz.
type Admin struct {
	srv *http.Server
	ln  net.Listener
}

// Route is an extra admin endpoint.
type Route struct {
	Path    string
	Handler http.Handler
}

// StartAdmin listens on addr (host:port; port 0 picks one) and serves the
// admin endpoints. ready reports readiness for /readyz (nil: always ready).
func StartAdmin(addr string, m *Metrics, ready func() error, log *slog.Logger, routes ...Route) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	for _, r := range routes {
		mux.Handle(r.Path, r.Handler)
	}
	a := &Admin{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server", "err", err)
		}
	}()
	return a, nil
}

// Addr is the listening address.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the server.
func (a *Admin) Close(ctx context.Context) error { return a.srv.Shutdown(ctx) }
