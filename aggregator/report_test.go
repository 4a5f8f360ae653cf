package aggregator

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/population"
)

// TestUtilityReport checks the report's own numbers: with the catalogue every measured cell is
// released, the errors are finite and below 100%, and the printed table names every metric.
// The numbers at the demo's scale are printed by 'shukei aggregator --report' and make bench.
func TestUtilityReport(t *testing.T) {
	u, err := UtilityReport(config.Default().Aggregator, population.New(600, 1, "t"), day, 1, 50)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	u.Print(&b)
	t.Log("\n" + b.String())
	measured := 0
	for _, r := range u.Rows {
		if r.Released > r.Cells {
			t.Errorf("%s %s: %d released of %d", r.Mode, r.Metric, r.Released, r.Cells)
		}
		if r.Mode == "catalogue" && r.Released != r.Cells {
			t.Errorf("%s: catalogued cells must all be released, got %d of %d", r.Metric, r.Released, r.Cells)
		}
		if r.Released > 0 && !(r.MedianErr < 1) {
			t.Errorf("%s %s: median relative error %v", r.Mode, r.Metric, r.MedianErr)
		}
		measured += r.Cells
		if !strings.Contains(b.String(), r.Metric) {
			t.Errorf("report lacks %s", r.Metric)
		}
	}
	if measured == 0 || math.IsNaN(u.MedianErr) || u.Released <= 0 || u.Released > 1 {
		t.Errorf("report measured nothing: %+v", u)
	}
}
