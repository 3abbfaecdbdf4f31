package main

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"
)

// series is one line of a chart.
type series struct {
	Name   string
	Points [][2]float64 // x, y
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// lineChart renders an SVG line chart with axes, ticks and a legend. Log axes
// need positive values; non-positive points are dropped.
func lineChart(title, xLabel, yLabel string, ss []series, logX, logY bool) template.HTML {
	const w, h, left, right, top, bottom = 640.0, 360.0, 70.0, 170.0, 30.0, 45.0
	pw, ph := w-left-right, h-top-bottom
	tx := func(v float64) float64 { return v }
	ty := tx
	if logX {
		tx = math.Log10
	}
	if logY {
		ty = math.Log10
	}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.Points {
			if (logX && p[0] <= 0) || (logY && p[1] <= 0) {
				continue
			}
			minX, maxX = math.Min(minX, tx(p[0])), math.Max(maxX, tx(p[0]))
			minY, maxY = math.Min(minY, ty(p[1])), math.Max(maxY, ty(p[1]))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="13" font-weight="bold">%s</text>`, left, template.HTMLEscapeString(title))
	if math.IsInf(minX, 1) {
		b.WriteString(`<text x="80" y="120">no data</text></svg>`)
		return template.HTML(b.String())
	}
	if !logY && minY > 0 {
		minY = 0
	}
	if maxX == minX {
		maxX, minX = maxX+1, minX-1
	}
	if maxY == minY {
		maxY = minY + 1
	}
	px := func(v float64) float64 { return left + (tx(v)-minX)/(maxX-minX)*pw }
	py := func(v float64) float64 { return top + ph - (ty(v)-minY)/(maxY-minY)*ph }
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, left, top, pw, ph)
	for i := 0; i <= 4; i++ {
		fx := minX + (maxX-minX)*float64(i)/4
		fy := minY + (maxY-minY)*float64(i)/4
		vx, vy := fx, fy
		if logX {
			vx = math.Pow(10, fx)
		}
		if logY {
			vy = math.Pow(10, fy)
		}
		x := left + pw*float64(i)/4
		y := top + ph - ph*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, x, top, x, top+ph)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, left, y, left+pw, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, top+ph+15, tick(vx))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`, left-5, y+4, tick(vy))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, left+pw/2, h-8, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&b, `<text transform="translate(14,%.1f) rotate(-90)" text-anchor="middle">%s</text>`, top+ph/2, template.HTMLEscapeString(yLabel))
	for i, s := range ss {
		color := palette[i%len(palette)]
		var pts []string
		for _, p := range s.Points {
			if (logX && p[0] <= 0) || (logY && p[1] <= 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, strings.Join(pts, " "))
		for _, pt := range pts {
			x, y, _ := strings.Cut(pt, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2.5" fill="%s"/>`, x, y, color)
		}
		ly := top + 12 + float64(i)*16
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="3" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`,
			left+pw+10, ly-4, color, left+pw+26, ly, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func tick(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// charts builds the report's charts: a latency distribution per scenario,
// throughput vs concurrency where a scenario ran at several concurrencies, and
// page latency vs depth for the paging scenarios.
func (r *report) charts() []template.HTML {
	var out []template.HTML
	// Latency distributions, one chart per scenario (highest concurrency run).
	for _, sc := range r.scenarios() {
		if strings.HasPrefix(sc, "paging-depth-") {
			continue
		}
		byVariant := map[string]resultRow{}
		var order []string
		for _, row := range r.Results {
			if row.Scenario != sc || len(row.CDF) == 0 {
				continue
			}
			if old, ok := byVariant[row.Variant]; !ok || row.Concurrency > old.Concurrency {
				if !ok {
					order = append(order, row.Variant)
				}
				byVariant[row.Variant] = row
			}
		}
		var ss []series
		for _, v := range order {
			row := byVariant[v]
			s := series{Name: v}
			for i, p := range cdfPercentiles {
				s.Points = append(s.Points, [2]float64{row.CDF[i], p})
			}
			ss = append(ss, s)
		}
		if len(ss) > 0 {
			out = append(out, lineChart(sc+": latency distribution", "latency (µs, log)", "percentile", ss, true, false))
		}
	}
	// Throughput vs concurrency.
	for _, sc := range r.scenarios() {
		conc := map[string][][2]float64{}
		var order []string
		for _, row := range r.Results {
			if row.Scenario != sc {
				continue
			}
			if _, ok := conc[row.Variant]; !ok {
				order = append(order, row.Variant)
			}
			conc[row.Variant] = append(conc[row.Variant], [2]float64{float64(row.Concurrency), row.OpsPerSec})
		}
		multi := false
		for _, pts := range conc {
			multi = multi || len(pts) > 1
		}
		if !multi {
			continue
		}
		var ss []series
		for _, v := range order {
			pts := conc[v]
			slices.SortFunc(pts, func(a, b [2]float64) int { return int(a[0] - b[0]) })
			ss = append(ss, series{Name: v, Points: pts})
		}
		out = append(out, lineChart(sc+": throughput vs concurrency", "concurrent workers", "ops/s", ss, true, false))
	}
	// Page latency vs depth.
	depth := map[string][][2]float64{}
	var order []string
	for _, row := range r.Results {
		if !strings.HasPrefix(row.Scenario, "paging-depth-") || row.OpsPerSec == 0 {
			continue
		}
		if _, ok := depth[row.Variant]; !ok {
			order = append(order, row.Variant)
		}
		depth[row.Variant] = append(depth[row.Variant], [2]float64{float64(max(row.Depth, 1)), row.P50us})
	}
	if len(order) > 0 {
		var ss []series
		for _, v := range order {
			ss = append(ss, series{Name: v, Points: depth[v]})
		}
		out = append(out, lineChart("timeline page: p50 latency vs depth", "depth (events, log; 0 shown as 1)", "p50 µs (log)", ss, true, true))
	}
	return out
}

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.0f", 100*f) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hsdal benchmark report</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f4f4}td.l{text-align:left}
.missed{color:#b00}.met{color:#070}svg{margin:1em 1em 0 0}</style></head><body>
<h1>hsdal benchmark report</h1>
<p>{{.Meta.Machine}}, {{.Meta.CPUs}} CPUs, Go {{.Meta.Go}}, PostgreSQL {{.Meta.PostgreSQL}}, Redis {{.Meta.Redis}}{{if .Meta.Pgpool}}, pgpool-II {{.Meta.Pgpool}} ({{.Meta.PgpoolMode}}){{end}}.
Scale {{.Meta.Scale}}, {{.Meta.Duration}} per run, seed {{.Meta.Seed}}, started {{.Meta.Started.Format "2006-01-02 15:04 MST"}}.</p>
{{if .Targets}}<h2>Targets</h2><ul>{{range .Targets}}<li class="{{if .Met}}met{{else}}missed{{end}}">{{if .Met}}met{{else}}MISSED{{end}}: {{.Name}} — {{.Detail}}</li>{{end}}</ul>{{end}}
<h2>Charts</h2>{{range .Charts}}{{.}}{{end}}
<h2>Results</h2><table><tr><th>scenario</th><th>variant</th><th>conc</th><th>ops/s</th><th>p50 µs</th><th>p95 µs</th><th>p99 µs</th><th>hit %</th><th>replica %</th><th>RYW violations</th><th>× raw-primary</th><th>errors</th></tr>
{{range .Results}}<tr><td class="l">{{.Scenario}}</td><td class="l">{{.Variant}}</td><td>{{.Concurrency}}</td><td>{{printf "%.0f" .OpsPerSec}}</td><td>{{printf "%.0f" .P50us}}</td><td>{{printf "%.0f" .P95us}}</td><td>{{printf "%.0f" .P99us}}</td><td>{{pct .HitRate}}</td><td>{{pct .ReplicaShare}}</td><td>{{.RYWViolations}}</td><td>{{if .RatioVsRawPrimary}}{{printf "%.2f" .RatioVsRawPrimary}}{{else}}-{{end}}</td><td>{{.Errors}}</td></tr>
{{end}}</table>
{{range .Meta.Notes}}<p>{{.}}</p>{{end}}
</body></html>
`))

// writeHTML writes a self-contained report: inline SVG, no scripts, no CDN.
func (r *report) writeHTML(w io.Writer) error {
	data := struct {
		*report
		Charts []template.HTML
	}{r, r.charts()}
	if err := htmlTmpl.Execute(w, data); err != nil {
		return fmt.Errorf("bench: render html: %w", err)
	}
	return nil
}
