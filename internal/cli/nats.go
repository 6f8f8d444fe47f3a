package cli

import (
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/onceplane/onceplane/auth"
)

// NATSFlags are the connection flags the commands share.
type NATSFlags struct {
	// User is the NATS user; its password comes from PasswordFile or
	// ONCEPLANE_NATS_PASSWORD. Empty means no authentication.
	User, PasswordFile string
	// CA is a PEM CA file: connect with TLS and verify the server with it.
	// Empty means plain text.
	CA string
}

// Register adds -nats-user, -nats-password-file and -tls-ca to fs.
func (f *NATSFlags) Register(fs *flag.FlagSet, role string) {
	fs.StringVar(&f.User, "nats-user", "", fmt.Sprintf("NATS user (the %s role: %q; an edge's is its region's, edge-<region>, a failover edge's failover-<region>); its password from -nats-password-file or ONCEPLANE_NATS_PASSWORD", role, role))
	fs.StringVar(&f.PasswordFile, "nats-password-file", "", "file holding the NATS password")
	fs.StringVar(&f.CA, "tls-ca", "", "PEM CA of the core nodes' certificates: connect with TLS")
}

// Password is the user's password ("" without a user).
func (f NATSFlags) Password() (string, error) {
	if f.User == "" {
		return "", nil
	}
	pw, err := Secret(f.PasswordFile, "ONCEPLANE_NATS_PASSWORD")
	if err != nil {
		return "", fmt.Errorf("nats password: %w", err)
	}
	return pw, nil
}

// Options returns the connection options: reconnect forever, every 100 ms,
// with the user's password and TLS when set.
func (f NATSFlags) Options(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if f.User != "" {
		pw, err := f.Password()
		if err != nil {
			return nil, err
		}
		// The user name fixes the inbox prefix its permissions allow
		// (package auth).
		u, err := auth.ParseUser(f.User)
		if err != nil {
			return nil, fmt.Errorf("-nats-user: %w", err)
		}
		opts = append(opts, auth.ClientOptions(u, pw)...)
	}
	if f.CA != "" {
		opts = append(opts, nats.RootCAs(f.CA))
	}
	return opts, nil
}
