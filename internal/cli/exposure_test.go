package cli

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/onceplane/onceplane/internal/exposure"
)

func TestCheckExposure(t *testing.T) {
	open := exposure.Listener{Name: "admin (-admin)", Addr: "0.0.0.0:9222", Missing: "no token", Weak: []string{"plain HTTP"}}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))

	err := CheckExposure(log, false, open)
	var refused *exposure.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if buf.Len() != 0 {
		t.Errorf("a refusal logged %q", buf.String())
	}

	if err := CheckExposure(log, true, open); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`level=ERROR msg="INSECURE: listening beyond loopback without protection (-insecure)" listener="admin (-admin)" addr=0.0.0.0:9222 missing="no token"`, `level=WARN`, `weakness="plain HTTP"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}
