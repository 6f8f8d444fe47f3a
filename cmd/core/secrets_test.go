package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onceplane/onceplane/auth"
)

// TestSecretsPerRegion: each region's edges receive only their region's
// secrets (issue 11: one edge password, one gossip key and one admin token
// served every region), each producer directory only producers' passwords,
// and a second run changes nothing.
func TestSecretsPerRegion(t *testing.T) {
	dir := t.TempDir()
	main, edges, prods, failovers := filepath.Join(dir, "all"), filepath.Join(dir, "edge"), filepath.Join(dir, "producer"), filepath.Join(dir, "failover")
	args := []string{"-dir", main, "-regions", "us-east,eu-west", "-tenants", "acme", "-edge-dir", edges, "-producer-dir", prods, "-failover-dir", failovers}
	if err := secrets(args); err != nil {
		t.Fatal(err)
	}
	files := func(root string) []string {
		var out []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				out = append(out, rel)
			}
			return nil
		})
		slices.Sort(out)
		return out
	}
	for _, r := range []string{"us-east", "eu-west"} {
		want := []string{"admin.token", "credentials/edge-" + r + ".password", "gossip.key", "tls/ca.pem"}
		if got := files(filepath.Join(edges, r)); !slices.Equal(got, want) {
			t.Errorf("%s's edges get %v, want %v", r, got, want)
		}
		// A region's failover edges get their own user, not its everyday
		// edges' (nor the gossip key: they do not gossip).
		want = []string{"admin.token", "credentials/failover-" + r + ".password", "tls/ca.pem"}
		if got := files(filepath.Join(failovers, r)); !slices.Equal(got, want) {
			t.Errorf("%s's failover edges get %v, want %v", r, got, want)
		}
	}
	if got, want := files(prods), []string{"credentials/producer-acme.password", "credentials/producer.password", "tls/ca.pem"}; !slices.Equal(got, want) {
		t.Errorf("producers get %v, want %v", got, want)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, f := range []string{"gossip.key", "admin.token"} {
		if read(filepath.Join(edges, "us-east", f)) == read(filepath.Join(edges, "eu-west", f)) {
			t.Errorf("two regions share %s", f)
		}
	}
	before, err := auth.Load(filepath.Join(main, "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets(args); err != nil {
		t.Fatal(err)
	}
	after, err := auth.Load(filepath.Join(main, "credentials"))
	if err != nil || len(after) != len(before) || after.Password(auth.EdgeUser("us-east")) != before.Password(auth.EdgeUser("us-east")) {
		t.Fatalf("a second run changed the credentials: %v", err)
	}
}
