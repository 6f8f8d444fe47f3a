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
	"github.com/onceplane/onceplane/topology"
)

// secrets runs "core secrets": it writes every secret a deployment needs
// into one directory, keeping what is already there, and exits:
//
//	credentials/<user>.password   NATS passwords per user (package auth):
//	                              producer, admin, sys, core, edge-<region>,
//	                              producer-<tenant>
//	tls/{ca,cert,key}.pem         development CA and certificate (package devcert)
//	gossip-<region>.key           hex gossip encryption key of region's edges (32 bytes)
//	admin-<region>.token          bearer token of region's edges' admin endpoints
//
// Run again, it changes nothing; delete a file to rotate it.
//
// -edge-dir and -producer-dir receive copies of only what that role needs,
// so each service mounts only its own secrets; the edges' copies are per
// region (-edge-dir/<region>), so a region's edges hold nothing that works
// in another region:
//
//	edge:      <region>/credentials/edge-<region>.password, <region>/tls/ca.pem,
//	           <region>/gossip.key, <region>/admin.token
//	failover:  <region>/credentials/failover-<region>.password, <region>/tls/ca.pem,
//	           <region>/admin.token (-failover-dir: the failover edges a
//	           region runs for the regions it stands by for, edge -failover-of)
//	producer:  credentials/producer.password, credentials/producer-<tenant>.password,
//	           tls/ca.pem (one directory: give each tenant's service only its own file)
func secrets(args []string) error {
	fl := flag.NewFlagSet("secrets", flag.ContinueOnError)
	dir := fl.String("dir", "secrets", "directory to write the secrets into")
	regionList := fl.String("regions", strings.Join(topology.Default().RegionNames(), ","), "comma-separated regions: an edge user (edge-<region>), a failover edge user (failover-<region>, not copied to -edge-dir: hand it to failover edges only), gossip key and admin token each")
	edgeDir := fl.String("edge-dir", "", "also copy each region's edge secrets into <edge-dir>/<region>")
	failoverDir := fl.String("failover-dir", "", "also copy each region's failover edge secrets (failover-<region>: the regions it stands by for) into <failover-dir>/<region>")
	producerDir := fl.String("producer-dir", "", "also copy the producers' secrets here")
	tenantList := fl.String("tenants", "", "comma-separated tenants: a producer user each (producer-<tenant>), beside the default tenant's (producer)")
	hosts := fl.String("hosts", "", "comma-separated host names or IPs the development certificate is valid for (localhost and 127.0.0.1 always)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	regions := strings.Split(*regionList, ",")
	users := auth.EdgeUsers(regions...)
	var tenants []string
	if *tenantList != "" {
		tenants = strings.Split(*tenantList, ",")
	}
	for _, t := range tenants {
		users = append(users, auth.ProducerUser(t))
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	if _, err := auth.Generate(filepath.Join(*dir, "credentials"), users...); err != nil {
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
	for _, r := range regions {
		if err := writeKey(filepath.Join(*dir, gossipKeyFile(r)), 32); err != nil {
			return err
		}
		if err := writeKey(filepath.Join(*dir, adminTokenFile(r)), 24); err != nil {
			return err
		}
	}
	type copy struct{ from, to string }
	var copies []copy
	// A region's edges and its failover edges each get their user's
	// password, the CA and the region's admin token; the everyday edges
	// also its gossip key (failover edges do not gossip).
	perRegion := func(dir string, user func(string) auth.User, gossip bool) {
		if dir == "" {
			return
		}
		for _, r := range regions {
			pw := filepath.Join("credentials", user(r).Name()+".password")
			out := filepath.Join(dir, r)
			copies = append(copies,
				copy{pw, filepath.Join(out, pw)},
				copy{"tls/ca.pem", filepath.Join(out, "tls/ca.pem")},
				copy{adminTokenFile(r), filepath.Join(out, "admin.token")})
			if gossip {
				copies = append(copies, copy{gossipKeyFile(r), filepath.Join(out, "gossip.key")})
			}
		}
	}
	perRegion(*edgeDir, auth.EdgeUser, true)
	perRegion(*failoverDir, auth.FailoverUser, false)
	if *producerDir != "" {
		files := []string{"credentials/producer.password", "tls/ca.pem"}
		for _, t := range tenants {
			files = append(files, filepath.Join("credentials", auth.ProducerUser(t).Name()+".password"))
		}
		for _, f := range files {
			copies = append(copies, copy{f, filepath.Join(*producerDir, f)})
		}
	}
	for _, c := range copies {
		if err := copySecret(filepath.Join(*dir, c.from), c.to); err != nil {
			return err
		}
	}
	fmt.Printf("secrets in %s: credentials/, tls/, gossip-<region>.key, admin-<region>.token for %s\n", *dir, strings.Join(regions, ", "))
	return nil
}

// writeKey writes n random bytes, hex, to path (0600) unless it exists.
func writeKey(path string, n int) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// gossipKeyFile is the name of region's gossip key in a secrets directory.
func gossipKeyFile(region string) string { return "gossip-" + region + ".key" }

// adminTokenFile is the name of region's admin token in a secrets directory.
func adminTokenFile(region string) string { return "admin-" + region + ".token" }

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
