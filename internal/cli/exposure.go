package cli

import (
	"flag"
	"log/slog"

	"github.com/onceplane/onceplane/internal/exposure"
)

// InsecureFlag registers -insecure on fs: start even when a listener
// reachable from other machines lacks its protection.
func InsecureFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("insecure", false, "start even when a listener bound beyond loopback has no protection (credentials, gossip key, admin token), logging each at error level; without it such a start is refused")
}

// CheckExposure applies protected mode (package exposure) to a command's
// listeners before it opens them: it returns the refusal, or logs each
// listener insecure lets through at error level and each weak point of an
// exposed listener at warn level.
func CheckExposure(log *slog.Logger, insecure bool, listeners ...exposure.Listener) error {
	warnings, err := exposure.Check(listeners, insecure)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		if w.Unprotected {
			log.Error("INSECURE: listening beyond loopback without protection (-insecure)", "listener", w.Listener, "addr", w.Addr, "missing", w.Problem)
		} else {
			log.Warn("listening beyond loopback with a weak point", "listener", w.Listener, "addr", w.Addr, "weakness", w.Problem)
		}
	}
	return nil
}
