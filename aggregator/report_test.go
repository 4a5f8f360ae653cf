package aggregator

import (
	"bytes"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

func TestSpearman(t *testing.T) {
	for _, c := range []struct {
		x, y []float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1},
		{[]float64{1, 2, 3, 4}, []float64{4, 3, 2, 1}, -1},
		{[]float64{1, 2, 3, 4, 5}, []float64{2, 1, 4, 3, 5}, 0.8},
		{[]float64{1, 1, 2}, []float64{1, 2, 3}, math.Sqrt(3) / 2},
	} {
		if got := Spearman(c.x, c.y); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Spearman(%v, %v) = %v, want %v", c.x, c.y, got, c.want)
		}
	}
	if !math.IsNaN(Spearman([]float64{1}, []float64{1})) {
		t.Error("one point has no correlation")
	}
}

// TestUtilityTargets holds the monthly feature-adoption release to its promise at 2,000
// tenants and ε=1 per metric and month (the public feature catalogue configured): median
// relative error ≤ 5% over cells with ≥ 200 true tenants, Spearman ρ ≥ 0.9 of the released
// top-20 features with the truth, and stated 95% intervals that hold the true value for
// 95% ± 2% of released cells over repeated draws. It also checks the report's own sanity for
// every row. 'shukei aggregator --report' (make bench) prints the whole table at 300, 2,000
// and 10,000 tenants.
func TestUtilityTargets(t *testing.T) {
	if raceDetector || testing.Short() && os.Getenv("CI") == "" {
		t.Skip("a month of 2,000 tenants, one goroutine: make test runs it without -race (and CI never skips it for -short)")
	}
	month := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	u, err := UtilityReport(config.Default().Aggregator, []*population.Population{population.New(2000, 1, "t")}, month, 1, 200, 100)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	u.Print(&b)
	t.Log("\n" + b.String())
	if os.Getenv("SHUKEI_REPORT_OUT") != "" {
		_ = os.WriteFile(os.Getenv("SHUKEI_REPORT_OUT"), b.Bytes(), 0o644)
	}
	r, ok := u.Row(2000, PeriodMonth, "catalogue", "feature_adoption")
	if !ok || r.Cells < 20 {
		t.Fatalf("no monthly feature_adoption row with cells: %+v", r)
	}
	if r.MedianErr > 0.05 {
		t.Errorf("monthly feature_adoption: median relative error %.4f over cells ≥ 200 tenants, want ≤ 0.05", r.MedianErr)
	}
	if r.Spearman < 0.9 {
		t.Errorf("monthly feature_adoption: top-20 Spearman ρ %.3f, want ≥ 0.9", r.Spearman)
	}
	if math.Abs(r.Coverage-0.95) > 0.02 {
		t.Errorf("monthly feature_adoption: 95%% intervals hold the truth for %.4f of cells, want 0.95 ± 0.02", r.Coverage)
	}
	for _, r := range u.Rows {
		if r.Released > 1 || r.Released < 0 {
			t.Errorf("%+v: share released out of [0, 1]", r)
		}
		if r.Mode == "catalogue" && r.Cells > 0 && r.Released != 1 {
			t.Errorf("%s %s: catalogued cells must all be released, got %.3f", r.Period, r.Metric, r.Released)
		}
		if r.Cells > 0 && r.Released > 0 && !(r.MedianErr < 1) {
			t.Errorf("%s %s %s: median relative error %v", r.Period, r.Mode, r.Metric, r.MedianErr)
		}
		if !strings.Contains(b.String(), r.Metric) {
			t.Errorf("report lacks %s", r.Metric)
		}
	}
}

// The tests that skip (or shrink) under -race are run without it by make test (and so by CI): a
// test that skips there and is missing from that run would never run at all (or never whole).
// None skips for a missing service. Every package's tests are searched for that branch.
func TestRaceSkippedTestsRunWithoutRace(t *testing.T) {
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	for _, line := range strings.Split(string(b), "\n") {
		if (strings.Contains(line, "go test") || strings.Contains(line, "$(GO) test")) && !strings.Contains(line, "-race") {
			runs = append(runs, line)
		}
	}
	skips := regexp.MustCompile(`func (Test\w+)\(t \*testing\.T\) \{\n\tif raceDetector`)
	found := 0
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") {
			// Not the module's sources: .services holds the running ClickHouse's data, whose
			// parts come and go while the walk reads the directory (a CI run failed on it).
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(filepath.Dir(strings.TrimPrefix(path, "../"))) + "/"
		for _, m := range skips.FindAllStringSubmatch(string(src), -1) {
			found++
			ran := false
			for _, run := range runs {
				ran = ran || strings.Contains(run, m[1]) && strings.Contains(run, pkg)
			}
			if !ran {
				t.Errorf("%s (%s) skips under -race but no run without -race in the Makefile names it and %s", m[1], path, pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 5 {
		t.Fatalf("found %d tests that skip under -race, want at least the 5 statistical ones", found)
	}
}

// PrintUtility prints the report of last month for each population size it is given.
func TestPrintUtility(t *testing.T) {
	var b bytes.Buffer
	if err := PrintUtility(&b, config.Default().Aggregator, UtilityOptions{Epsilon: 1, Tenants: []int{40}, MinTenants: 5, Draws: 1}); err != nil {
		t.Fatal(err)
	}
	month := time.Now().UTC().AddDate(0, -1, 0).Format("2006-01")
	if !strings.Contains(b.String(), "Utility of the external_aggregate releases at ε=1 per metric release") || !strings.Contains(b.String(), "month "+month) {
		t.Fatalf("the report of last month (%s) at ε=1:\n%s", month, b.String())
	}
}

// The utility report draws its releases on every CPU (drawReleases): under -race this shows
// the release path shares nothing mutable between draws, and the draws come back complete, in
// order, with independent noise.
func TestDrawReleasesConcurrently(t *testing.T) {
	p := mustPlan(t, catalogueConfig())
	pop := population.New(60, 1, "t")
	w := WindowOf(time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), 24*time.Hour)
	tenants := map[string]*registry.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i].Tenant
	}
	acc := p.NewAcc(w)
	var off int64
	for _, ev := range pop.Day(w.Start) {
		tg := decision.Tagged{Event: ev, Tenant: tenants[ev.TenantID], Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ev.TenantID, ev.User)}
		acc.Add(&tg, off)
		off++
	}
	partials, err := acc.Partials([]byte("test-key"))
	if err != nil || len(partials) == 0 {
		t.Fatalf("%d partials (%v)", len(partials), err)
	}
	const reps = 8
	draws, err := drawReleases(p, partials, reps)
	if err != nil || len(draws) != reps {
		t.Fatalf("%d draws (%v), want %d", len(draws), err, reps)
	}
	cells := func(rs []Released) string {
		var b strings.Builder
		for _, r := range rs {
			fmt.Fprintf(&b, "%s/%s ", r.Metric, cellKey(r.DimValues))
		}
		return b.String()
	}
	values := map[string]bool{}
	for i, rs := range draws {
		if len(rs) == 0 || cells(rs) != cells(draws[0]) {
			t.Fatalf("draw %d released %d cells, not the catalogue's cells of draw 0", i, len(rs))
		}
		var b strings.Builder
		for _, r := range rs {
			fmt.Fprintf(&b, "%d ", r.Value)
		}
		values[b.String()] = true
	}
	if len(values) != reps {
		t.Errorf("%d distinct draws of %d: the noise is not drawn afresh for each", len(values), reps)
	}
}
