package query

import (
	"testing"
	"time"

	"github.com/shukei/shukei/gate"
)

// One home for k: every aggregate report (Threshold) is built from atoms alone — its run is
// gated's, which reads through gate.Read — and no other report is.
func TestAggregateReportsReadAtomsOnly(t *testing.T) {
	var aggregate []string
	for _, r := range Reports() {
		if r.Threshold != (r.build != nil) || r.Threshold != (r.weeks != nil) {
			t.Errorf("%s: Threshold %v, build %v, weeks %v: an aggregate report is built from atoms, and only it", r.Name, r.Threshold, r.build != nil, r.weeks != nil)
		}
		if r.Threshold {
			aggregate = append(aggregate, r.Name+"/"+r.Purpose)
			if !gate.Gated(r.Purpose) {
				t.Errorf("%s serves %s, whose atoms are not sealed", r.Name, r.Purpose)
			}
		}
	}
	if len(aggregate) != 4 {
		t.Errorf("aggregate reports %v, want feature_ranking, active_tenants, contract_comparison and status_activity", aggregate)
	}
}

// A period selects whole weeks, and its figures add up whole atoms: two requests whose
// periods overlap differ by whole atoms.
func TestContractComparisonSumsWholeAtoms(t *testing.T) {
	w1 := time.Date(2026, 11, 9, 0, 0, 0, 0, time.UTC)
	w2 := w1.AddDate(0, 0, 7)
	atom := func(w time.Time, status, feature string, tenants, uses uint64) gate.Atom {
		cat := "feature_use"
		if feature == gate.All {
			cat = ""
		}
		return gate.Atom{Week: w, Category: cat, Feature: feature, Status: status, Edition: "standard", Tenants: tenants, Users: tenants, Uses: uses}
	}
	at := gate.Atoms{From: w1, To: w2, List: []gate.Atom{
		atom(w1, "trial", gate.All, 6, 60), atom(w1, "trial", "board", 5, 50),
		atom(w2, "trial", gate.All, 8, 80), atom(w2, "trial", "board", 6, 61),
	}}
	a := Args{"category": "feature_use", "status": []string{"trial"}, "by_edition": false, "limit": 10}
	rows, err := buildContractComparison(a, at)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]any{}
	for _, r := range rows {
		got[r[2].(string)] = r
	}
	// tenants, active_tenants, adoption_pct, users, uses, uses_per_tenant
	if b := got["board"]; b == nil || b[3] != 5.5 || b[4] != 7.0 || b[5] != round1(100*11.0/14) || b[7] != uint64(111) || b[8] != round1(111.0/11) {
		t.Errorf("board over two weeks: %v", b)
	}
	if all := got[gate.All]; all == nil || all[3] != 7.0 || all[7] != uint64(140) {
		t.Errorf("all activity over two weeks: %v", all)
	}
	one, err := buildContractComparison(a, gate.Atoms{From: w2, To: w2, List: at.List[2:]})
	if err != nil {
		t.Fatal(err)
	}
	if one[1][7] != uint64(61) || got["board"][7].(uint64)-50 != one[1][7] {
		t.Errorf("the two-week board uses minus the first week's is not the second week's atom: %v, %v", got["board"], one[1])
	}
}
