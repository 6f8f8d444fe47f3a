package report

import (
	"regexp"
	"strconv"
	"testing"
)

// TestTakeoverAxisSpansTakeovers: the takeover chart's axis ran from zero
// (the cluster's start) to the last takeover's end, so a takeover late in a
// run was a sliver crushed at the chart's right edge. The axis spans the
// takeovers now: their bars fill the plot's width.
func TestTakeoverAxisSpansTakeovers(t *testing.T) {
	svg := timeline([]Phase{
		{Row: "us-east p0 (e1)", Name: "rebuild", Start: 52.0, End: 52.4},
		{Row: "us-east p0 (e1)", Name: "resume", Start: 52.4, End: 52.5},
		{Row: "us-east p1 (e1)", Name: "rebuild", Start: 52.1, End: 53.0},
	})
	bars := regexp.MustCompile(`<rect class="bar" x="([0-9.]+)" y="[0-9]+" width="([0-9.]+)"`).FindAllStringSubmatch(svg, -1)
	if len(bars) != 3 {
		t.Fatalf("%d bars drawn, want 3", len(bars))
	}
	lo, hi := 1e9, 0.0
	for _, b := range bars {
		x, _ := strconv.ParseFloat(b[1], 64)
		w, _ := strconv.ParseFloat(b[2], 64)
		lo, hi = min(lo, x), max(hi, x+w)
	}
	const plot = 1100 - 220 - 20 // the chart's width less its margins
	if hi-lo < 0.9*plot {
		t.Fatalf("the takeovers span %.0f px of a %d px plot (from x=%.0f)", hi-lo, plot, lo)
	}
}
