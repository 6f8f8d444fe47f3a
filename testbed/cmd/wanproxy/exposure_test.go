package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
)

// TestProtectedMode runs the wanproxy binary: a control port beyond
// loopback (it has no authentication) refuses to start unless -insecure,
// which says so at error level; a loopback control port starts.
func TestProtectedMode(t *testing.T) {
	bin, err := proc.Build("../../..", t.TempDir(), "./testbed/cmd/wanproxy")
	if err != nil {
		t.Fatal(err)
	}
	for _, control := range []string{"0.0.0.0:0", ":0", "[::]:0", "wan-host:0"} {
		t.Run("refused on "+control, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-target", "127.0.0.1:1", "-control", control)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if ctx.Err() != nil || !errors.As(err, &exit) {
				t.Fatalf("want a refusal, got %v:\n%s", err, out)
			}
			for _, want := range []string{"refusing to start", "control HTTP (-control) on " + control + ": no authentication", "-insecure"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	ps, err := ports.Free(2)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ control, log string }{
		{fmt.Sprintf("127.0.0.1:%d", ps[0]), ""},
		{fmt.Sprintf("0.0.0.0:%d", ps[1]), `level=ERROR msg="INSECURE: listening beyond loopback without protection (-insecure)" listener="control HTTP (-control)" addr=0.0.0.0:`},
	} {
		t.Run("starts on "+c.control, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"-target", "127.0.0.1:1", "-control", c.control}
			if c.log != "" {
				args = append(args, "-insecure")
			}
			p, err := proc.Start("wanproxy", filepath.Join(dir, "wanproxy.log"), bin, args...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = p.Stop(10 * time.Second) }()
			url := fmt.Sprintf("http://127.0.0.1:%d/healthz", ps[i])
			hc := http.Client{Timeout: time.Second}
			if !poll.Until(30*time.Second, func() bool {
				if p.Exited() {
					return true
				}
				resp, err := hc.Get(url)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}) || p.Exited() {
				t.Fatalf("control port not serving %s:\n%s", url, p.Output())
			}
			out := p.Output()
			if c.log != "" && !strings.Contains(out, c.log) {
				t.Errorf("log lacks %q:\n%s", c.log, out)
			}
			if c.log == "" && strings.Contains(out, "beyond loopback") {
				t.Errorf("loopback control port warned:\n%s", out)
			}
		})
	}
}
