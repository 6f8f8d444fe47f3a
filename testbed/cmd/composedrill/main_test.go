package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLedgerAccount: the drill counts every handler run from the ledgers,
// line by line: a second unflagged run of an ID in a region is a duplicate
// effect, a flagged one is a re-run within the bound, a torn line is
// skipped, and other loads' IDs are ignored.
func TestLedgerAccount(t *testing.T) {
	dir := t.TempDir()
	write := func(region, edge string, lines ...string) {
		p := filepath.Join(dir, region, edge, "ledger.jsonl")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	line := func(id string, unc bool) string {
		if unc {
			return `{"id":"` + id + `","partition":0,"seq":1,"edge":"e","uncertain":true,"time":"2026-01-01T00:00:00Z"}`
		}
		return `{"id":"` + id + `","partition":0,"seq":1,"edge":"e","time":"2026-01-01T00:00:00Z"}`
	}
	write("us", "edge-1", line("d-a", false), line("d-b", false), `{"id":"d-c","parti`+line("d-c", false), line("other-x", false), line("other-x", false))
	write("us", "edge-2", line("d-b", true), line("d-c", true))
	write("eu", "edge-1", line("d-d", false), line("d-d", false))
	runs, n := readLedgers(dir, "d-")
	if n != 7 {
		t.Fatalf("%d lines of this run, want 7", n)
	}
	ids := []string{"d-a", "d-b", "d-c", "d-d"}
	ra := accountRuns(runs, ids, 10)
	us, eu := ra.byRegion["us"], ra.byRegion["eu"]
	if us.Extra != 2 || us.Flagged != 2 || us.Unflagged != 0 || us.Torn != 1 {
		t.Fatalf("us: %+v", us)
	}
	if eu.Unflagged != 1 || ra.err == nil || !strings.Contains(ra.err.Error(), "eu: 1 IDs handled again") {
		t.Fatalf("eu's unflagged second run not reported: %+v, %v", eu, ra.err)
	}
	if e := runs["us"].Effects(); e["d-b"] != 1 || e["d-c"] != 1 {
		t.Fatalf("flagged re-runs counted as effects: %v", e)
	}
	delete(runs, "eu")
	if ra := accountRuns(runs, ids, 2); ra.err != nil {
		t.Fatalf("two flagged re-runs within a bound of 2: %v", ra.err)
	}
	if ra := accountRuns(runs, ids, 1); ra.err == nil {
		t.Fatal("two flagged re-runs pass a bound of 1")
	}
}
