package main

import (
	"log/slog"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/exposure"
)

// refuseExposed exits when the control port would listen beyond loopback
// without -insecure (protected mode, package exposure): it has no
// authentication at all. The proxied port (-listen) is not checked: it only
// forwards to the gateway it fronts, whose own authentication applies.
func refuseExposed(log *slog.Logger, control string, insecure bool) {
	if err := cli.CheckExposure(log, insecure, listeners(control)...); err != nil {
		cli.Fatal(log, "refusing to start", err)
	}
}

// listeners is the control port when -control is set.
func listeners(control string) []exposure.Listener {
	if control == "" {
		return nil
	}
	return []exposure.Listener{{Name: "control HTTP (-control)", Addr: control,
		Missing: "no authentication (the control port has none): anyone who reaches it can cut, heal and slow the link"}}
}
