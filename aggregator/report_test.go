package aggregator

import (
	"os"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/population"
)

func TestUtilityReport(t *testing.T) {
	pop := population.New(2000, 1, "t")
	u, err := UtilityReport(config.Default().Aggregator, pop, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), 1, 50)
	if err != nil {
		t.Fatal(err)
	}
	u.Print(os.Stdout)
}
