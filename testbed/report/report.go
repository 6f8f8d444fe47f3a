// Package report renders a simulation's results as one self-contained HTML
// page — inline SVG charts, no script, no network — and as JSON: throughput
// per region over time with drill markers, latency histograms, decisions by
// path, and each takeover's timeline.
package report

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
)

// Point is one sample of a series: T seconds since the start, V its value.
type Point struct {
	T float64 `json:"t"`
	V float64 `json:"v"`
}

// Series is a named line (for example one region's events/s).
type Series struct {
	Name   string  `json:"name"`
	Points []Point `json:"points"`
}

// Mark is a vertical marker on the time axis (a drill step).
type Mark struct {
	T     float64 `json:"t"`
	Label string  `json:"label"`
}

// Histogram is a latency distribution: Counts[i] observations at most
// UpperMs[i] milliseconds (and above UpperMs[i-1]).
type Histogram struct {
	Name     string    `json:"name"`
	UpperMs  []float64 `json:"upper_ms"`
	Counts   []int64   `json:"counts"`
	P50, P99 float64   `json:"-"`
	Total    int64     `json:"total"`
}

// Group is a titled set of histograms drawn side by side.
type Group struct {
	Title      string      `json:"title"`
	Histograms []Histogram `json:"histograms"`
}

// Phase is one bar of a takeover timeline.
type Phase struct {
	Row   string  `json:"row"` // e.g. "us-east p3 (edge-1)"
	Name  string  `json:"phase"`
	Start float64 `json:"start_s"`
	End   float64 `json:"end_s"`
}

// Waterfall is one traced event's journey across regions, a bar per step,
// in milliseconds since its publish.
type Waterfall struct {
	Title   string `json:"title"` // why it was picked, e.g. "slowest us-east -> eu-west"
	TraceID string `json:"trace_id"`
	Event   string `json:"event"`
	Bars    []Bar  `json:"bars"`
}

// Bar is one step of a waterfall. Kind is publish, wait, decide, claim,
// replicate or merge.
type Bar struct {
	Row   string  `json:"row"`
	Kind  string  `json:"kind"`
	Start float64 `json:"start_ms"`
	End   float64 `json:"end_ms"`
}

// Doc is everything the page shows.
type Doc struct {
	Title      string                      `json:"title"`
	Verdict    string                      `json:"verdict"`
	Summary    []string                    `json:"summary"`
	Throughput []Series                    `json:"throughput"`
	Marks      []Mark                      `json:"marks"`
	Latency    []Group                     `json:"latency"`
	Paths      map[string]map[string]int64 `json:"paths"` // region -> path -> decisions
	Takeovers  []Phase                     `json:"takeovers"`
	Traces     []Waterfall                 `json:"traces"`
	TraceNote  string                      `json:"trace_note"` // how the traces were sampled, where to open them
}

// JSON writes d as indented JSON.
func (d Doc) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

var palette = []string{"#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"}

// HTML writes the page.
func (d Doc) HTML(w io.Writer) error {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title><style>
body{font:14px system-ui,sans-serif;margin:24px;color:#111;max-width:1180px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#16a34a}.fail{background:#dc2626}
pre{background:#f5f5f5;padding:10px;overflow-x:auto;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg{background:#fff;border:1px solid #ddd}
svg text{font:11px system-ui,sans-serif;fill:#333}
</style></head><body>
<h1>%s <span class="verdict %s">%s</span></h1>
`, esc(d.Title), esc(d.Title), map[bool]string{true: "pass", false: "fail"}[d.Verdict == "PASS"], esc(d.Verdict))
	b.WriteString("<pre>")
	for _, l := range d.Summary {
		b.WriteString(esc(l) + "\n")
	}
	b.WriteString("</pre>\n<h2>Throughput per region (decided events/s), drill markers</h2>\n")
	b.WriteString(lineChart(d.Throughput, d.Marks))
	for _, g := range d.Latency {
		fmt.Fprintf(&b, "<h2>%s</h2>\n<div class=\"charts\">\n", esc(g.Title))
		for i, h := range g.Histograms {
			b.WriteString(histChart(h, palette[i%len(palette)]))
		}
		b.WriteString("</div>\n")
	}
	b.WriteString("<h2>Decisions by path</h2>\n")
	b.WriteString(pathChart(d.Paths))
	b.WriteString("<h2>Traced events across regions (publish → decide → claim → replicate → merge)</h2>\n")
	if d.TraceNote != "" {
		fmt.Fprintf(&b, "<p>%s</p>\n", esc(d.TraceNote))
	}
	if len(d.Traces) == 0 {
		b.WriteString(`<svg data-chart="trace" width="600" height="30"><text x="8" y="20">no traced event recorded</text></svg>`)
	}
	for _, w := range d.Traces {
		b.WriteString(waterfall(w))
	}
	b.WriteString("<h2>Takeovers (rebuild, merge, fence, resume)</h2>\n")
	b.WriteString(timeline(d.Takeovers))
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func lineChart(series []Series, marks []Mark) string {
	const W, H, L, R, T, B = 1100, 300, 60, 150, 20, 30
	var maxT, maxV float64
	for _, s := range series {
		for _, p := range s.Points {
			maxT, maxV = math.Max(maxT, p.T), math.Max(maxV, p.V)
		}
	}
	if maxT == 0 {
		maxT = 1
	}
	if maxV == 0 {
		maxV = 1
	}
	x := func(t float64) float64 { return L + t/maxT*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/maxV*(H-T-B) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg data-chart="throughput" width="%d" height="%d" viewBox="0 0 %d %d">`, W, H, W, H)
	axes(&b, W, H, L, R, T, B, maxT, maxV, "s", "/s")
	for _, m := range marks {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="4 3"/><text x="%.1f" y="%d" transform="rotate(-90 %.1f %d)" text-anchor="end">%s</text>`,
			x(m.T), T, x(m.T), H-B, x(m.T)+12, T+4, x(m.T)+12, T+4, html.EscapeString(m.Label))
	}
	for i, s := range series {
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.T), y(p.V)))
		}
		c := palette[i%len(palette)]
		fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-width="2" points="%s"/>`, c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`, W-R+10, T+i*18, c, W-R+28, T+i*18+10, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func axes(b *strings.Builder, W, H, L, R, T, B int, maxX, maxY float64, xu, yu string) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`, L, H-B, W-R, H-B, L, T, L, H-B)
	for i := 0; i <= 4; i++ {
		f := float64(i) / 4
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s%s</text>`, L-4, float64(H-B)-f*float64(H-T-B)+4, short(f*maxY), yu)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s%s</text>`, float64(L)+f*float64(W-L-R), H-B+16, short(f*maxX), xu)
	}
}

func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func histChart(h Histogram, color string) string {
	const W, H, L, B, T = 260, 190, 40, 44, 34
	var maxC int64 = 1
	for _, c := range h.Counts {
		maxC = max(maxC, c)
	}
	n := max(1, len(h.Counts))
	bw := float64(W-L-10) / float64(n)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg data-chart="histogram" width="%d" height="%d"><text x="8" y="14" font-weight="600">%s</text><text x="8" y="28">n=%d  p50 %.1f ms  p99 %.1f ms</text>`,
		W, H, html.EscapeString(h.Name), h.Total, h.P50, h.P99)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`, L, H-B, W-10, H-B)
	for i, c := range h.Counts {
		bh := float64(c) / float64(maxC) * float64(H-B-T)
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>≤ %s ms: %d</title></rect>`,
			float64(L)+float64(i)*bw+1, float64(H-B)-bh, bw-2, bh, color, short(h.UpperMs[i]), c)
		if i%2 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-45 %.1f %d)">%s</text>`,
				float64(L)+float64(i)*bw+bw/2, H-B+12, float64(L)+float64(i)*bw+bw/2, H-B+12, short(h.UpperMs[i]))
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">ms</text></svg>`, W-24, H-4)
	return b.String()
}

func pathChart(paths map[string]map[string]int64) string {
	regions := make([]string, 0, len(paths))
	names := map[string]bool{}
	for r, m := range paths {
		regions = append(regions, r)
		for p := range m {
			names[p] = true
		}
	}
	sort.Strings(regions)
	var ps []string
	for p := range names {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	const W, rowH, L = 1100, 34, 110
	H := 30 + rowH*len(regions) + 20*((len(ps)+4)/5)
	var maxTotal int64 = 1
	for _, r := range regions {
		var t int64
		for _, v := range paths[r] {
			t += v
		}
		maxTotal = max(maxTotal, t)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg data-chart="paths" width="%d" height="%d">`, W, H)
	for i, r := range regions {
		y := 10 + i*rowH
		fmt.Fprintf(&b, `<text x="4" y="%d">%s</text>`, y+16, html.EscapeString(r))
		x := float64(L)
		for j, p := range ps {
			v := paths[r][p]
			if v == 0 {
				continue
			}
			w := float64(v) / float64(maxTotal) * float64(W-L-20)
			fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%d" width="%.1f" height="24" fill="%s"><title>%s %s: %d</title></rect>`, x, y, w, palette[j%len(palette)], html.EscapeString(r), html.EscapeString(p), v)
			x += w
		}
	}
	for j, p := range ps {
		x, y := L+(j%5)*190, 10+rowH*len(regions)+(j/5)*20
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`, x, y, palette[j%len(palette)], x+16, y+10, html.EscapeString(p))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

var phaseColor = map[string]string{"detect": "#94a3b8", "declare": "#f59e0b", "rebuild": "#2563eb", "merge": "#9333ea", "fence": "#dc2626", "resume": "#16a34a"}

func timeline(ps []Phase) string {
	if len(ps) == 0 {
		return `<svg data-chart="takeovers" width="600" height="30"><text x="8" y="20">no takeovers recorded</text></svg>`
	}
	var rows []string
	seen := map[string]bool{}
	// The axis spans the takeovers themselves (from the first start to the
	// last end), not the run: a takeover of a second in a minute-long run
	// would be a sliver at one edge.
	minT, maxT := math.Inf(1), math.Inf(-1)
	for _, p := range ps {
		if !seen[p.Row] {
			seen[p.Row] = true
			rows = append(rows, p.Row)
		}
		minT, maxT = math.Min(minT, p.Start), math.Max(maxT, p.End)
	}
	const W, rowH, L, R = 1100, 16, 220, 20
	H := 40 + rowH*len(rows)
	span := maxT - minT
	if span <= 0 {
		span = 1
	}
	x := func(t float64) float64 { return L + (t-minT)/span*(W-L-R) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg data-chart="takeovers" width="%d" height="%d">`, W, H)
	idx := map[string]int{}
	for i, r := range rows {
		idx[r] = i
		fmt.Fprintf(&b, `<text x="4" y="%d">%s</text>`, 12+i*rowH, html.EscapeString(r))
	}
	for _, p := range ps {
		y := idx[p.Row] * rowH
		w := math.Max(1, x(p.End)-x(p.Start))
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%d" width="%.1f" height="12" fill="%s"><title>%s %s %.0f ms</title></rect>`,
			x(p.Start), y+2, w, phaseColor[p.Name], html.EscapeString(p.Row), p.Name, (p.End-p.Start)*1000)
	}
	i := 0
	for _, name := range []string{"detect", "declare", "rebuild", "merge", "fence", "resume"} {
		if (name == "detect" || name == "declare") && !hasPhase(ps, name) {
			continue // a region loss's steps, shown only with one
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`, L+i*110, H-18, phaseColor[name], L+i*110+16, H-8, name)
		i++
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%.2f s to %.2f s</text></svg>`, W-R, H-8, minT, maxT)
	return b.String()
}

// hasPhase reports whether a phase of ps is called name.
func hasPhase(ps []Phase, name string) bool {
	for _, p := range ps {
		if p.Name == name {
			return true
		}
	}
	return false
}

var barColor = map[string]string{"publish": "#2563eb", "wait": "#cbd5e1", "decide": "#16a34a", "claim": "#ea580c", "replicate": "#e9d5ff", "merge": "#9333ea"}

// waterfall draws one traced event: a row per step on a millisecond axis.
func waterfall(w Waterfall) string {
	const W, rowH, L, R = 1100, 18, 260, 90
	H := 44 + rowH*len(w.Bars)
	maxT := 1.0
	for _, b := range w.Bars {
		maxT = math.Max(maxT, b.End)
	}
	x := func(t float64) float64 { return L + t/maxT*(W-L-R) }
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><figcaption>%s: event <code>%s</code>, trace <code>%s</code></figcaption>`,
		html.EscapeString(w.Title), html.EscapeString(w.Event), html.EscapeString(w.TraceID))
	fmt.Fprintf(&b, `<svg data-chart="trace" data-trace="%s" width="%d" height="%d">`, html.EscapeString(w.TraceID), W, H)
	for i, bar := range w.Bars {
		y := 4 + i*rowH
		fmt.Fprintf(&b, `<text x="4" y="%d">%s</text>`, y+11, html.EscapeString(bar.Row))
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%d" width="%.1f" height="13" fill="%s"><title>%s %.1f ms</title></rect>`,
			x(bar.Start), y, math.Max(1, x(bar.End)-x(bar.Start)), barColor[bar.Kind], html.EscapeString(bar.Row), bar.End-bar.Start)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.1f ms</text>`, math.Max(x(bar.Start), x(bar.End))+4, y+11, bar.End-bar.Start)
	}
	for _, t := range []float64{0, maxT / 2, maxT} {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f ms</text>`, x(t), H-6, t)
	}
	b.WriteString("</svg></figure>\n")
	return b.String()
}
