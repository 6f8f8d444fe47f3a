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
//
// -edge-dir and -producer-dir receive copies of only what that role needs,
// in the same layout, so each service mounts only its own secrets:
//
//	edge:      credentials/edge.password, tls/ca.pem, gossip.key, admin.token
//	producer:  credentials/producer.password, tls/ca.pem
func secrets(args []string) error {
	fl := flag.NewFlagSet("secrets", flag.ContinueOnError)
	dir := fl.String("dir", "secrets", "directory to write the secrets into")
	edgeDir := fl.String("edge-dir", "", "also copy the edges' secrets here")
	producerDir := fl.String("producer-dir", "", "also copy the producers' secrets here")
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
	for _, c := range []struct {
		dir   string
		files []string
	}{
		{*edgeDir, []string{"credentials/edge.password", "tls/ca.pem", "gossip.key", "admin.token"}},
		{*producerDir, []string{"credentials/producer.password", "tls/ca.pem"}},
	} {
		if c.dir == "" {
			continue
		}
		for _, f := range c.files {
			if err := copySecret(filepath.Join(*dir, f), filepath.Join(c.dir, f)); err != nil {
				return err
			}
		}
	}
	fmt.Printf("secrets in %s: credentials/, tls/, gossip.key, admin.token\n", *dir)
	return nil
}

// copySecret copies src to dst (creating its directory), keeping src's mode.
func copySecret(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		return fmt.Errorf("copy secret: %w", err)
	}
	return nil
}
