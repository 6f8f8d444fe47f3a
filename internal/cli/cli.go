// Package cli holds what the onceplane commands share: logging setup,
// signal handling and flag parsing helpers.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Logger returns a text logger at level ("debug", "info", "warn", "error").
func Logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Ints parses a comma-separated list of integers and ranges ("0,2,4-7").
// The empty string returns nil.
func Ints(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("list %q: bad range %q", s, part)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// Fatal logs err and exits with status 1.
func Fatal(log *slog.Logger, msg string, err error) {
	log.Error(msg, "err", err)
	os.Exit(1)
}

// Secret reads a secret from file when it is set, else from the environment
// variable env ("" when neither is set). Secrets never come from flags, so
// they stay out of process listings and shell history.
func Secret(file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv(env)), nil
}

// Health runs the "health" subcommand the binaries share (container
// healthchecks in images without a shell): GET the URL given by -url and
// exit 0 on a 2xx answer within -timeout, 1 otherwise.
func Health(args []string, defaultURL string) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	url := fs.String("url", defaultURL, "health endpoint to GET")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	ca := fs.String("ca", "", "PEM CA to verify an https -url with (default: the system's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := http.Client{Timeout: *timeout}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "unhealthy: cannot read the CA", *ca, err)
			return 2
		}
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, "unhealthy:", resp.Status)
		return 1
	}
	fmt.Println("healthy")
	return 0
}

// RegionURLs are addresses by region, in the order given.
type RegionURLs struct {
	Names []string
	URLs  map[string][]string
}

// Regions parses 'region=addr,addr;region2=addr' (spaces around entries
// are ignored; an empty string is no regions).
func Regions(s string) (RegionURLs, error) {
	out := RegionURLs{URLs: map[string][]string{}}
	for _, g := range strings.Split(s, ";") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		name, urls, ok := strings.Cut(g, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.TrimSpace(urls) == "" {
			return out, fmt.Errorf("%q is not region=address,...", g)
		}
		if _, dup := out.URLs[name]; dup {
			return out, fmt.Errorf("region %s given twice", name)
		}
		out.Names = append(out.Names, name)
		out.URLs[name] = strings.Split(strings.TrimSpace(urls), ",")
	}
	return out, nil
}
