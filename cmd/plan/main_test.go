package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary be a calibration child, as the command is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == roleArg {
		os.Exit(child(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestReferenceFigures: the built-in figures are usable.
func TestReferenceFigures(t *testing.T) {
	if err := reference.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestCalibrate runs a small calibration on real processes (core nodes,
// one and three, and edges as children) and checks every figure was measured and is
// plausible: an edge decides at least 1,000 events per CPU-second, and an
// ID costs at least its 16-byte hash and at most a few hundred bytes.
func TestCalibrate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a core node and edges as processes")
	}
	c := calibration{events: 20_000, payload: 256, dup: 0.1, rounds: 1}
	f, err := c.run()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Check(); err != nil {
		t.Fatalf("%+v: %v", f, err)
	}
	if f.EdgeCPU > 1000 || f.BytesPerID < 16 || f.BytesPerID > 300 || f.EventOverhead <= 0 || f.ClaimRecordOverhead <= 0 || f.DetectSec > 10 {
		t.Fatalf("implausible figures: %+v", f)
	}
	// The comparisons: one node, three nodes with one and three shards, a
	// stream per partition; each measured (every event stored and decided).
	if len(f.Scaling) != 3 || f.Scaling[2].Nodes != 3 || f.Scaling[2].Shards != 3 || f.Scaling[1].Shards != 1 {
		t.Fatalf("scaling: %+v", f.Scaling)
	}
	for _, r := range f.Scaling {
		if !(r.StoredPerSec > 0 && r.DecidedPerSec > 0 && r.CoreStoreCPU > 0) || r.Events != c.events {
			t.Errorf("scaling row: %+v", r)
		}
	}
	if x := f.Filtering; x == nil || !(x.OwnServeCPU > 0 && x.SharedServeCPU > 0 && x.OwnStoreCPU > 0) {
		t.Errorf("filtering: %+v", x)
	}
	t.Log(f.Text())
}
