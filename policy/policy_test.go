package policy

import (
	"errors"
	"testing"

	"github.com/shukei/shukei/event"
)

// The bit positions are stored with every event: they must never move.
func TestPurposeBitsAreStable(t *testing.T) {
	for _, tc := range []struct {
		id  string
		bit uint
	}{
		{"support", 0},
		{"service_improvement", 1},
		{"marketing", 2},
		{"follow_up", 3},
		{"interview_selection", 4},
		{"external_aggregate", 5},
		{"external_consented", 6},
	} {
		t.Run(tc.id, func(t *testing.T) {
			p, err := ParsePurpose(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if uint(p) != tc.bit || SetOf(p) != Set(1)<<tc.bit {
				t.Errorf("%s: bit %d, want %d", tc.id, p, tc.bit)
			}
			if p.String() != tc.id {
				t.Errorf("String() = %q", p.String())
			}
		})
	}
	if len(Purposes()) != 7 {
		t.Errorf("%d purposes, want 7: a new purpose needs a row above", len(Purposes()))
	}
}

func TestParseUnknownIDs(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"purpose", func() error { _, err := ParsePurpose("advertising"); return err }()},
		{"category", func() error { _, err := ParseCategory("location"); return err }()},
		{"granularity", func() error { _, err := ParseGranularity("rows"); return err }()},
		{"status", func() error { _, err := ParseStatus("unknown"); return err }()},
		{"set", func() error { _, err := ParseSet("support,advertising"); return err }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, ErrUnknown) {
				t.Errorf("err = %v, want ErrUnknown", tc.err)
			}
		})
	}
}

func TestSet(t *testing.T) {
	s := SetOf(Marketing, Support, ExternalConsented)
	if !s.Has(Support) || !s.Has(Marketing) || !s.Has(ExternalConsented) || s.Has(FollowUp) {
		t.Errorf("Has wrong for %v", s)
	}
	if s.Len() != 3 {
		t.Errorf("Len = %d", s.Len())
	}
	if got := s.String(); got != "support,marketing,external_consented" {
		t.Errorf("String = %q", got)
	}
	back, err := ParseSet(s.String())
	if err != nil || back != s {
		t.Errorf("ParseSet(%q) = %v, %v", s.String(), back, err)
	}
	if s.Remove(Marketing).Has(Marketing) || s.Remove(Marketing).Len() != 2 {
		t.Error("Remove")
	}
	if Set(0).String() != "" || len(Set(0).List()) != 0 {
		t.Error("empty set")
	}
	if s.Add(Purpose(42)) != s || s.Has(Purpose(42)) || Set(0xffff).Len() != 7 {
		t.Error("unknown purposes must be ignored")
	}
	if AllPurposes.Len() != 7 {
		t.Errorf("AllPurposes = %b", AllPurposes)
	}
}

func TestCategoryOf(t *testing.T) {
	for _, s := range event.Schemas() {
		t.Run(string(s), func(t *testing.T) {
			c := CategoryOf(s)
			if !c.Valid() {
				t.Fatalf("CategoryOf(%q) = %v", s, c)
			}
			if c.String()+"/v1" != string(s) {
				t.Errorf("CategoryOf(%q) = %v", s, c)
			}
		})
	}
	for _, s := range []event.Schema{"", "feature_use", "feature_use/", "feature_use/1", "location/v1", "FEATURE_USE/v1", "feature_use/vx"} {
		if c := CategoryOf(s); c != 0 {
			t.Errorf("CategoryOf(%q) = %v, want unknown", s, c)
		}
	}
	if CategoryOf("feature_use/v2") != FeatureUse {
		t.Error("a new major version keeps its category")
	}
	if len(Categories()) != len(event.Schemas()) {
		t.Errorf("%d categories for %d event schemas", len(Categories()), len(event.Schemas()))
	}
}

func TestEnumStrings(t *testing.T) {
	for _, g := range []Granularity{None, DPOnly, Aggregate, TenantSummary, EventLevel} {
		back, err := ParseGranularity(g.String())
		if err != nil || back != g {
			t.Errorf("granularity %v: %v %v", g, back, err)
		}
	}
	for _, s := range Statuses() {
		back, err := ParseStatus(s.String())
		if err != nil || back != s {
			t.Errorf("status %v: %v %v", s, back, err)
		}
	}
	for _, c := range Categories() {
		back, err := ParseCategory(c.String())
		if err != nil || back != c {
			t.Errorf("category %v: %v %v", c, back, err)
		}
	}
	if StatusUnknown.Valid() || Category(0).Valid() || Purpose(7).Valid() {
		t.Error("zero/unknown values must not be valid")
	}
	if !(None < DPOnly && DPOnly < Aggregate && Aggregate < TenantSummary && TenantSummary < EventLevel) {
		t.Error("granularities must be ordered from least to most detailed")
	}
}
