package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
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
		Traces: []Waterfall{{Title: "slowest us-east -> eu-west", TraceID: "0102030405060708090a0b0c0d0e0f10", Event: "ev-1", Bars: []Bar{
			{Row: "publish · us-east", Kind: "publish", Start: 0, End: 0.4}, {Row: "stored, queued", Kind: "wait", End: 3, Start: 0.4},
			{Row: "decide · us-east · exact-miss", Kind: "decide", Start: 3, End: 9}, {Row: "claim append · us-east", Kind: "claim", Start: 5, End: 9},
			{Row: "replicate → eu-west", Kind: "replicate", Start: 9, End: 60}, {Row: "merge · eu-west", Kind: "merge", Start: 60, End: 61},
		}}},
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

// measure is appended to a copy of the page: after layout it records, for
// every chart, what Chromium actually drew (sizes from the layout engine,
// not attributes), so that a blank chart fails. The page itself has no
// script; the copy exists only to be measured.
const measure = `<script>
(function () {
  var m = [];
  document.querySelectorAll('svg[data-chart]').forEach(function (svg) {
    var r = svg.getBoundingClientRect();
    var c = {kind: svg.getAttribute('data-chart'), w: r.width, h: r.height, lines: [], bars: [], labels: 0, marks: 0};
    svg.querySelectorAll('polyline.series').forEach(function (p) {
      var b = p.getBBox();
      c.lines.push({points: p.points.numberOfItems, w: b.width, h: b.height, len: p.getTotalLength()});
    });
    svg.querySelectorAll('rect.bar').forEach(function (e) {
      var b = e.getBoundingClientRect();
      c.bars.push({w: b.width, h: b.height});
    });
    svg.querySelectorAll('text').forEach(function (t) {
      var b = t.getBBox();
      if (t.textContent.trim() !== '' && b.width > 0 && b.height > 0) c.labels++;
    });
    svg.querySelectorAll('line[stroke-dasharray]').forEach(function (l) {
      if (l.getBBox().height > 0) c.marks++;
    });
    m.push(c);
  });
  var pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify(m);
  document.body.appendChild(pre);
})();
</script>`

// drawn is one chart as Chromium laid it out.
type drawn struct {
	Kind  string  `json:"kind"`
	W     float64 `json:"w"`
	H     float64 `json:"h"`
	Lines []struct {
		Points int     `json:"points"`
		W      float64 `json:"w"`
		H      float64 `json:"h"`
		Len    float64 `json:"len"`
	} `json:"lines"`
	Bars []struct {
		W float64 `json:"w"`
		H float64 `json:"h"`
	} `json:"bars"`
	Labels int `json:"labels"`
	Marks  int `json:"marks"`
}

// visibleBars counts the bars drawn with an area.
func (d drawn) visibleBars() int {
	n := 0
	for _, b := range d.Bars {
		if b.W >= 0.5 && b.H >= 0.5 {
			n++
		}
	}
	return n
}

// render lays page out in headless Chromium and returns what it drew.
func render(t *testing.T, bin, page string) []drawn {
	t.Helper()
	src, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(src, []byte("</body>"))
	if i < 0 {
		t.Fatal("page has no </body>")
	}
	measured := filepath.Join(t.TempDir(), "measured.html")
	if err := os.WriteFile(measured, append(append(append([]byte{}, src[:i]...), measure...), src[i:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	// Chromium itself can fail to start on a loaded machine (a crashed
	// zygote, a full /dev/shm): up to three tries, each failure shown.
	var m [][]byte
	for try := 1; m == nil; try++ {
		cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000", "--dump-dom", "file://"+measured)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil {
			if m = regexp.MustCompile(`(?s)<pre id="measured">(.*?)</pre>`).FindSubmatch(out); m == nil {
				err = fmt.Errorf("the measurement did not run; DOM:\n%.2000s", out)
			}
		}
		if err != nil {
			if try == 3 {
				t.Fatalf("chromium: %v\n%.2000s", err, stderr.String())
			}
			t.Logf("chromium, try %d: %v\n%.1000s", try, err, stderr.String())
		}
	}
	var charts []drawn
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &charts); err != nil {
		t.Fatalf("measurement: %v", err)
	}
	return charts
}

// TestChromiumRendersCharts lays the page out in headless Chromium and
// checks what it drew, not what the markup says: every chart has a size;
// the throughput chart has a line per region through its points, with
// length and height, axis labels and the drill markers; histograms, the
// path chart and the takeover timeline have bars with an area. For the
// sample document it also checks the drawing against the data (points per
// line, one bar per non-zero count, the tallest bar where the largest count
// is). A blank chart (no points, zero-height bars, nothing laid out) fails.
// It skips when Chromium is not installed, unless ONCEPLANE_REQUIRE_CHROMIUM
// is set (CI sets it).
func TestChromiumRendersCharts(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("ONCEPLANE_REQUIRE_CHROMIUM") != "" {
			t.Fatal("chromium not found and ONCEPLANE_REQUIRE_CHROMIUM is set")
		}
		t.Skip("chromium not installed (apt-get install chromium)")
	}
	page := os.Getenv("ONCEPLANE_REPORT_HTML") // a simulation's report, when CI has one
	sampled := page == ""
	if sampled {
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
	charts := render(t, bin, page)
	byKind := map[string][]drawn{}
	for _, c := range charts {
		if c.W < 100 || c.H < 20 {
			t.Errorf("%s chart laid out %.0fx%.0f px", c.Kind, c.W, c.H)
		}
		byKind[c.Kind] = append(byKind[c.Kind], c)
	}
	if n := len(byKind["throughput"]); n != 1 {
		t.Fatalf("%d throughput charts, want 1", n)
	}
	tp := byKind["throughput"][0]
	if len(tp.Lines) < 2 {
		t.Errorf("%d throughput lines, want one per region (>= 2)", len(tp.Lines))
	}
	rising := 0
	for i, l := range tp.Lines {
		if l.Points < 2 || l.Len < 100 || l.W < 100 {
			t.Errorf("throughput line %d: %d points, %.0f px long, %.0f px wide: not drawn", i, l.Points, l.Len, l.W)
		}
		if l.H >= 10 {
			rising++
		}
	}
	if rising == 0 {
		t.Error("every throughput line is flat: no values drawn")
	}
	if tp.Labels < 10+len(tp.Lines) {
		t.Errorf("%d labels drawn on the throughput chart, want 10 axis ticks and a legend per line", tp.Labels)
	}
	if tp.Marks < 1 {
		t.Error("no drill marker drawn")
	}
	if n := len(byKind["histogram"]); n < 2 {
		t.Errorf("%d latency histograms, want >= 2", n)
	}
	for i, h := range byKind["histogram"] {
		if h.visibleBars() == 0 || h.Labels < 2 {
			t.Errorf("histogram %d: %d bars drawn, %d labels", i, h.visibleBars(), h.Labels)
		}
	}
	if len(byKind["trace"]) == 0 {
		t.Error("no traced event drawn")
	}
	for i, c := range byKind["trace"] {
		// publish, wait, decide at least; labels: a row name, a duration per bar, the axis.
		if c.visibleBars() < 3 || c.Labels < 2*c.visibleBars()+3 {
			t.Errorf("trace %d: %d bars drawn, %d labels", i, c.visibleBars(), c.Labels)
		}
	}
	for _, kind := range []string{"paths", "takeovers"} {
		if n := len(byKind[kind]); n != 1 {
			t.Fatalf("%d %s charts, want 1", n, kind)
		}
		if c := byKind[kind][0]; c.visibleBars() == 0 || c.Labels == 0 {
			t.Errorf("%s chart: %d bars drawn, %d labels", kind, c.visibleBars(), c.Labels)
		}
	}
	if sampled {
		doc := sample()
		for i, l := range tp.Lines {
			if want := len(doc.Throughput[i].Points); l.Points != want {
				t.Errorf("throughput line %d: %d points drawn, %d in the data", i, l.Points, want)
			}
		}
		for i, h := range byKind["histogram"] {
			// 3, 10, 2: three bars, the second the tallest.
			if h.visibleBars() != 3 || len(h.Bars) != 3 || !(h.Bars[1].H > h.Bars[0].H && h.Bars[0].H > h.Bars[2].H) {
				t.Errorf("histogram %d: bars %+v, want 3 with heights ordered as the counts 3, 10, 2", i, h.Bars)
			}
		}
		if n := byKind["paths"][0].visibleBars(); n != 3 {
			t.Errorf("%d path bars drawn, want 3 (one per non-zero path and region)", n)
		}
		if n := byKind["takeovers"][0].visibleBars(); n != 2 {
			t.Errorf("%d takeover phases drawn, want 2", n)
		}
		if tr := byKind["trace"]; len(tr) != 1 || tr[0].visibleBars() != 6 || !(tr[0].Bars[4].W > 10*tr[0].Bars[0].W) {
			t.Errorf("trace waterfall: %+v, want 6 bars, the replication (51 ms) far wider than the publish (0.4 ms)", tr)
		}
	}
	bars := 0
	for _, c := range charts {
		bars += c.visibleBars()
	}
	t.Logf("%s rendered: %d charts, %d bars drawn, %d throughput lines", page, len(charts), bars, len(tp.Lines))
}
