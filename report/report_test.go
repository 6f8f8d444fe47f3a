package report

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func sample() Doc {
	h := Histogram{Name: "us-east -> eu-west", UpperMs: []float64{1, 10, 100}, Counts: []int64{3, 10, 2}, Total: 15, P50: 5, P99: 90}
	return Doc{
		Title: "test <run>", Verdict: "PASS", Summary: []string{"lost 0"},
		Throughput: []Series{{Name: "us-east", Points: []Point{{0, 0}, {1, 900}, {2, 1000}}}, {Name: "eu-west", Points: []Point{{0, 0}, {1, 800}, {2, 700}}}},
		Marks:      []Mark{{T: 1.2, Label: "cut us-east <-> eu-west"}},
		Latency:    []Group{{Title: "Replication lag", Histograms: []Histogram{h, h}}},
		Paths:      map[string]map[string]int64{"us-east": {"bloom-negative": 10, "remote-claim": 3}, "eu-west": {"exact-hit": 4}},
		Takeovers:  []Phase{{Row: "us-east p0", Name: "rebuild", Start: 0.1, End: 0.2}, {Row: "us-east p0", Name: "resume", Start: 0.2, End: 0.25}},
	}
}

func TestHTMLIsSelfContained(t *testing.T) {
	var b bytes.Buffer
	if err := sample().HTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script", "http://", "https://", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must need no network", bad)
		}
	}
	if strings.Contains(page, "test <run>") {
		t.Error("title not escaped")
	}
	var j bytes.Buffer
	if err := sample().JSON(&j); err != nil || !json.Valid(j.Bytes()) {
		t.Fatalf("JSON: %v", err)
	}
}

// TestChromiumRendersCharts renders the page in headless Chromium and checks
// the rendered DOM holds every chart with its marks. It skips when Chromium
// is not installed, unless ONCEPLANE_REQUIRE_CHROMIUM is set (CI sets it).
func TestChromiumRendersCharts(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("ONCEPLANE_REQUIRE_CHROMIUM") != "" {
			t.Fatal("chromium not found and ONCEPLANE_REQUIRE_CHROMIUM is set")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	page := os.Getenv("ONCEPLANE_REPORT_HTML") // a simulation's report, when CI has one
	if page == "" {
		page = filepath.Join(t.TempDir(), "report.html")
		f, err := os.Create(page)
		if err != nil {
			t.Fatal(err)
		}
		if err := sample().HTML(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	abs, _ := filepath.Abs(page)
	out, err := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://"+abs).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	dom := string(out)
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(dom, -1)) }
	if n := count(`<svg data-chart="throughput"`); n != 1 {
		t.Errorf("%d throughput charts, want 1", n)
	}
	if n := count(`<polyline class="series"`); n < 2 {
		t.Errorf("%d throughput lines, want one per region (>= 2)", n)
	}
	if n := count(`stroke-dasharray`); n < 1 {
		t.Errorf("no drill markers")
	}
	if n := count(`<svg data-chart="histogram"`); n < 2 {
		t.Errorf("%d latency histograms, want >= 2", n)
	}
	if n := count(`<svg data-chart="paths"`); n != 1 {
		t.Errorf("%d path charts, want 1", n)
	}
	if n := count(`<svg data-chart="takeovers"`); n != 1 {
		t.Errorf("%d takeover charts, want 1", n)
	}
	if n := count(`<rect class="bar"`); n < 5 {
		t.Errorf("%d bars drawn, want >= 5", n)
	}
	t.Logf("%s rendered: %d charts, %d bars", page, count(`<svg data-chart=`), count(`<rect class="bar"`))
}
