package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/devcert"
)

// secrets runs "core secrets": it writes every secret a deployment needs
// into one directory, keeping what is already there, and exits:
//
//	credentials/<role>.password   NATS passwords per role (package auth)
//	tls/{ca,cert,key}.pem         development CA and certificate (package devcert)
//	gossip.key                    hex gossip encryption key (32 bytes)
//	admin.token                   bearer token of the edges' admin endpoints
//
// Run again, it changes nothing; delete a file to rotate it.
func secrets(args []string) error {
	fl := flag.NewFlagSet("secrets", flag.ContinueOnError)
	dir := fl.String("dir", "secrets", "directory to write the secrets into")
	hosts := fl.String("hosts", "", "comma-separated host names or IPs the development certificate is valid for (localhost and 127.0.0.1 always)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	if _, err := auth.Generate(filepath.Join(*dir, "credentials")); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	tlsDir := filepath.Join(*dir, "tls")
	if _, err := os.Stat(filepath.Join(tlsDir, "ca.pem")); errors.Is(err, fs.ErrNotExist) {
		var hs []string
		if *hosts != "" {
			hs = strings.Split(*hosts, ",")
		}
		if _, err := devcert.Generate(tlsDir, hs); err != nil {
			return fmt.Errorf("dev certs: %w", err)
		}
	}
	for _, f := range []struct {
		name  string
		bytes int
	}{{"gossip.key", 32}, {"admin.token", 24}} {
		path := filepath.Join(*dir, f.name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		b := make([]byte, f.bytes)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	fmt.Printf("secrets in %s: credentials/, tls/, gossip.key, admin.token\n", *dir)
	return nil
}
