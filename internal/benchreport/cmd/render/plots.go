package main

import (
	"fmt"
	"image/color"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
)

var (
	skColor  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	refColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
)

// plotThroughput draws one pair of bars (safekeeper, reference) per result
// in MB/s, at their medians.
func plotThroughput(rws []row, path string) (bool, error) {
	var keys []string
	var sk, ref plotter.Values
	for _, r := range rws {
		if r.Unit != "MB/s" || len(r.Safekeeper) == 0 {
			continue
		}
		keys = append(keys, r.key)
		sk = append(sk, benchreport.Median(r.Safekeeper))
		v := 0.0
		if len(r.Reference) > 0 {
			v = benchreport.Median(r.Reference)
		}
		ref = append(ref, v)
	}
	if len(keys) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = "Throughput, medians (ids as in the table)"
	p.Y.Label.Text = "MB/s"
	p.Y.Min = 0
	w := vg.Points(18)
	skBars, err := plotter.NewBarChart(sk, w)
	if err != nil {
		return false, err
	}
	skBars.Color, skBars.Offset = skColor, -w/2
	refBars, err := plotter.NewBarChart(ref, w)
	if err != nil {
		return false, err
	}
	refBars.Color, refBars.Offset = refColor, w/2
	// Headroom above the tallest bar for the legend.
	p.Y.Max = 1.2 * max(slices.Max(sk), slices.Max(ref))
	p.Add(skBars, refBars, plotter.NewGrid())
	p.Legend.Add("safekeeper", skBars)
	p.Legend.Add("reference", refBars)
	p.Legend.Top = true
	p.NominalX(keys...)
	width := max(4*vg.Inch, vg.Length(len(keys))*0.9*vg.Inch)
	return true, p.Save(width, 4*vg.Inch, path)
}

// plotLatencyCDF draws every series of the P5 results as an empirical CDF,
// in the result's unit.
func plotLatencyCDF(rws []row, path string) (bool, error) {
	p := plot.New()
	p.Title.Text = "Latency CDF"
	p.Y.Label.Text = "fraction ≤ x"
	p.Y.Min, p.Y.Max = 0, 1
	unit := ""
	i := 0
	for _, r := range rws {
		if r.ID != "P5" {
			continue
		}
		for _, name := range sortedKeys(r.Series) {
			xs := slices.Clone(r.Series[name])
			if len(xs) == 0 {
				continue
			}
			slices.Sort(xs)
			pts := make(plotter.XYs, len(xs))
			for j, x := range xs {
				pts[j] = plotter.XY{X: x, Y: float64(j+1) / float64(len(xs))}
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return false, err
			}
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(r.key+" "+name, l)
			unit = r.Unit
			i++
		}
	}
	if i == 0 {
		return false, nil
	}
	p.X.Label.Text = strings.TrimSpace("latency " + paren(unit))
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.YOffs = vg.Points(10)
	return true, p.Save(6*vg.Inch, 4*vg.Inch, path)
}

// plotRSS draws, for the P7 results whose Series has "consumers" (the number
// of consumers connected at each sample), every other series of the same
// length against it (KiB, drawn in MiB), and the reference's median (KiB per
// process) times the number of consumers.
func plotRSS(rws []row, path string) (bool, error) {
	p := plot.New()
	p.Title.Text = "Memory for N idle tailing consumers"
	p.X.Label.Text = "consumers connected"
	p.Y.Label.Text = "MiB above the idle server"
	p.X.Min, p.Y.Min = 0, 0
	i := 0
	add := func(name string, pts plotter.XYs) error {
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
		i++
		return nil
	}
	for _, r := range rws {
		n := r.Series["consumers"]
		if r.ID != "P7" || len(n) == 0 {
			continue
		}
		for _, name := range sortedKeys(r.Series) {
			ys := r.Series[name]
			if name == "consumers" || len(ys) != len(n) {
				continue
			}
			pts := make(plotter.XYs, len(n))
			for j := range n {
				pts[j] = plotter.XY{X: n[j], Y: ys[j] / 1024}
			}
			if err := add(name, pts); err != nil {
				return false, err
			}
		}
		if len(r.Reference) > 0 && r.Unit == "KiB" {
			per := benchreport.Median(r.Reference)
			last := slices.Max(n)
			name := fmt.Sprintf("%s × N (%s KiB each)", r.RefName, benchreport.FormatValue(per))
			if err := add(name, plotter.XYs{{X: 0, Y: 0}, {X: last, Y: per * last / 1024}}); err != nil {
				return false, err
			}
		}
	}
	if i == 0 {
		return false, nil
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return true, p.Save(6*vg.Inch, 4*vg.Inch, path)
}

func sortedKeys(m map[string][]float64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}
