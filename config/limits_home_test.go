package config_test

import (
	"go/ast"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/modsrc"
)

// handBuiltLimits are the non-test sources allowed to build event.Limits by hand, and why.
var handBuiltLimits = map[string]string{
	// shukei policy explain explains any past event (decision.InspectToExplain): its limits
	// are not the roles' but deliberately wider (a century old, a day of skew).
	"pipeline/decision/explain.go": "explain's own limits",
}

// One home for the event limits (issue #18): the collector, the processor and the aggregator
// decode events under the same limits, built from the configuration by config.EventLimits and
// nowhere else. A non-test source outside config and event that writes an event.Limits{...}
// literal fails.
func TestEventLimitsHaveOneHome(t *testing.T) {
	const path = "github.com/shukei/shukei/event"
	for _, f := range modsrc.Files(t) {
		if f.Test() || f.In("config", "event") || handBuiltLimits[f.Path] != "" {
			continue
		}
		ast.Inspect(f.AST, func(n ast.Node) bool {
			if c, ok := n.(*ast.CompositeLit); ok && modsrc.SelectorOf(f, c.Type, path, "Limits") {
				t.Errorf("%s: builds event.Limits by hand; use config.EventLimits", f.Pos(c.Pos()))
			}
			return true
		})
	}
}

// The limits are the configuration's, with event's defaults where it sets none.
func TestEventLimits(t *testing.T) {
	c := config.Default()
	got := c.EventLimits()
	want := event.Limits{MaxAge: c.Events.MaxAge, MaxSkew: c.Events.MaxSkew, MaxBytes: c.Events.MaxEventBytes}
	if got != want {
		t.Errorf("EventLimits() = %+v, want %+v", got, want)
	}
	if got := config.EventLimits(config.Events{}); got != event.DefaultLimits() {
		t.Errorf("EventLimits of nothing = %+v, want the defaults %+v", got, event.DefaultLimits())
	}
	if got := config.EventLimits(config.Events{MaxAge: time.Hour, MaxEventBytes: 4096}); got.MaxAge != time.Hour || got.MaxBytes != 4096 || got.MaxSkew != event.DefaultMaxSkew {
		t.Errorf("EventLimits = %+v", got)
	}
}
