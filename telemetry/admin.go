package telemetry

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
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

// AdminOptions configures the admin endpoints. Zero values are documented per field.
type AdminOptions struct {
	// Addr is host:port to listen on; port 0 picks one.
	Addr string
	// Metrics is served on /metrics.
	Metrics *Metrics
	// Ready reports readiness for /readyz. Nil means always ready.
	Ready func() error
	// Routes are extra endpoints (for example /status).
	Routes []Route
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every endpoint except /healthz and /readyz (health checks stay open).
	// Zero means no token: for loopback-only use.
	Token string
	// TLS, when set, serves HTTPS only, so the token does not cross the
	// network in clear. Nil means plain HTTP.
	TLS *tls.Config
	// Logger receives errors. Nil means slog.Default().
	Logger *slog.Logger
}

// StartAdmin listens and serves /metrics, /healthz, /readyz and the extra routes.
func StartAdmin(o AdminOptions) (*Admin, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", o.Addr, err)
	}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	mux := http.NewServeMux()
	guard := func(h http.Handler) http.Handler {
		if o.Token == "" {
			return h
		}
		want := []byte("Bearer " + o.Token)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="onceplane"`)
				http.Error(w, "a bearer token is required", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	mux.Handle("/metrics", guard(promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{})))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready != nil {
			if err := o.Ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	for _, r := range o.Routes {
		mux.Handle(r.Path, guard(r.Handler))
	}
	a := &Admin{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("admin server", "err", err)
		}
	}()
	return a, nil
}

// Addr is the listening address.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the server.
func (a *Admin) Close(ctx context.Context) error { return a.srv.Shutdown(ctx) }
