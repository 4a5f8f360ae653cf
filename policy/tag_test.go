package policy

import (
	"fmt"
	"testing"
	"time"
)

// The v1 matrix, written out again independently of v1.yaml: the test is the
// specification, the YAML the implementation. A change to either must be a
// change to both.
var specV1 = map[Category]map[Purpose]Granularity{
	TenantProfile: {Support: None, ServiceImprovement: None, Marketing: Aggregate, FollowUp: TenantSummary, InterviewSelection: TenantSummary, ExternalAggregate: DPOnly, ExternalConsented: TenantSummary},
	ClientEnv:     {Support: EventLevel, ServiceImprovement: None, Marketing: None, FollowUp: None, InterviewSelection: None, ExternalAggregate: DPOnly, ExternalConsented: TenantSummary},
	AppAccess:     {Support: EventLevel, ServiceImprovement: Aggregate, Marketing: Aggregate, FollowUp: TenantSummary, InterviewSelection: TenantSummary, ExternalAggregate: DPOnly, ExternalConsented: TenantSummary},
	FeatureUse:    {Support: None, ServiceImprovement: Aggregate, Marketing: Aggregate, FollowUp: TenantSummary, InterviewSelection: TenantSummary, ExternalAggregate: DPOnly, ExternalConsented: TenantSummary},
	Settings:      {Support: None, ServiceImprovement: None, Marketing: None, FollowUp: TenantSummary, InterviewSelection: TenantSummary, ExternalAggregate: DPOnly, ExternalConsented: TenantSummary},
	Operation:     {Support: EventLevel, ServiceImprovement: None, Marketing: None, FollowUp: None, InterviewSelection: None, ExternalAggregate: None, ExternalConsented: None},
}

// specClause is the clause each purpose rests on.
var specClause = map[Purpose]string{
	Support:            "3(1)-1",
	ServiceImprovement: "3(1)-2",
	Marketing:          "3(1)-3",
	FollowUp:           "3(1)-4",
	InterviewSelection: "3(1)-5",
	ExternalAggregate:  "3(2)-4",
	ExternalConsented:  "3(2)-1",
}

func mustEmbedded(t testing.TB) *Versions {
	t.Helper()
	vs, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestV1MatrixMatchesSpec(t *testing.T) {
	p := mustEmbedded(t).Policy(1)
	for _, c := range Categories() {
		for _, pur := range Purposes() {
			t.Run(fmt.Sprintf("%s/%s[%s]", c, pur, specClause[pur]), func(t *testing.T) {
				if got, want := p.Cell(c, pur), specV1[c][pur]; got != want {
					t.Errorf("matrix.%s.%s = %s, want %s", c, pur, got, want)
				}
			})
		}
	}
}

// consentCase is the consent dimension: none, given before the data was
// collected, given after it. Under v1 only external_consented needs consent.
type consentCase struct {
	name     string
	consents func(collected time.Time) []Consent
	counts   bool // the consent is in force when the data was collected
}

var consentCases = []consentCase{
	{"no_consent", func(time.Time) []Consent { return nil }, false},
	{"consent_before", func(at time.Time) []Consent {
		return []Consent{{Version: 1, Purposes: SetOf(ExternalConsented), At: at.Add(-24 * time.Hour)}}
	}, true},
	{"consent_after", func(at time.Time) []Consent {
		return []Consent{{Version: 1, Purposes: SetOf(ExternalConsented), At: at.Add(time.Second)}}
	}, false},
}

// TestTagV1 covers every purpose × category × contract status × consent cell of
// policy v1. Each case names the clause that decides it.
func TestTagV1(t *testing.T) {
	vs := mustEmbedded(t)
	collected := time.Date(2025, 6, 1, 9, 15, 0, 0, time.UTC)
	for _, c := range Categories() {
		for _, pur := range Purposes() {
			for _, st := range Statuses() {
				for _, cc := range consentCases {
					cell := specV1[c][pur]
					granted := cell != None && st != Terminated && (pur != ExternalConsented || cc.counts)
					var code RefusalCode
					clause := specClause[pur]
					switch {
					case granted:
					case st == Terminated:
						code, clause = RefusedTerminated, "2(3)"
					case cell == None:
						code = RefusedNotNeeded
					default:
						code = RefusedNoConsent // external_consented: 3(2)-1
					}
					name := fmt.Sprintf("%s/%s/%s/%s[%s]", c, pur, st, cc.name, clause)
					t.Run(name, func(t *testing.T) {
						tenant := Tenant{ID: "acme", Status: st, Consents: cc.consents(collected)}
						d := vs.Tag(c, tenant, collected)
						if d.Version != 1 {
							t.Errorf("version %d, want 1", d.Version)
						}
						if d.Purposes.Has(pur) != granted {
							t.Fatalf("%s granted = %v, want %v (tag %q)", pur, d.Purposes.Has(pur), granted, d.Purposes)
						}
						if d.Refused != nil {
							t.Error("Tag must leave Refused nil")
						}
						e := vs.Explain(c, tenant, collected)
						if granted {
							if _, ok := e.Refused[pur]; ok {
								t.Errorf("Explain refuses a granted purpose: %v", e.Refused[pur])
							}
							if g := e.Grants[pur]; g.Granularity != cell || g.Note == "" {
								t.Errorf("grant %+v, want granularity %s and a note", g, cell)
							}
							return
						}
						r, ok := e.Refused[pur]
						if !ok {
							t.Fatal("Explain gives no refusal")
						}
						if r.Code != code || r.Clause != clause {
							t.Errorf("refusal %q %v, want code %s clause %s", r.Code, r, code, clause)
						}
					})
				}
			}
		}
	}
}

// Only external_consented depends on consent in v1: no other purpose widens
// or narrows with it.
func TestTagV1ConsentChangesOnlyExternalConsented(t *testing.T) {
	vs := mustEmbedded(t)
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range Categories() {
		for _, st := range Statuses() {
			t.Run(fmt.Sprintf("%s/%s[3(2)-1]", c, st), func(t *testing.T) {
				without := vs.Tag(c, Tenant{Status: st}, at).Purposes
				with := vs.Tag(c, Tenant{Status: st, Consents: consentCases[1].consents(at)}, at).Purposes
				if without.Remove(ExternalConsented) != with.Remove(ExternalConsented) {
					t.Errorf("consent changed other purposes: %q vs %q", without, with)
				}
			})
		}
	}
}

func TestTagTenantEdgeCases(t *testing.T) {
	vs := mustEmbedded(t)
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	allFeatureUse := SetOf(ServiceImprovement, Marketing, FollowUp, InterviewSelection, ExternalAggregate)
	for _, tc := range []struct {
		name   string
		cat    Category
		tenant Tenant
		want   Set
		code   RefusalCode // of every refused purpose, when set
	}{
		{"unknown_status[2(5)]", FeatureUse, Tenant{}, 0, RefusedUnknownStatus},
		{"status_out_of_range[2(5)]", FeatureUse, Tenant{Status: Status(9)}, 0, RefusedUnknownStatus},
		{"unknown_category[1]", Category(0), Tenant{Status: Contracted}, 0, RefusedUnknownCategory},
		{"category_out_of_range[1]", Category(200), Tenant{Status: Contracted}, 0, RefusedUnknownCategory},
		{"contract_ends_later[3(1)-2]", FeatureUse, Tenant{Status: Contracted, ContractEnd: at.Add(time.Nanosecond)}, allFeatureUse, ""},
		{"contract_ended_at_collection[2(3)]", FeatureUse, Tenant{Status: Contracted, ContractEnd: at}, 0, RefusedTerminated},
		{"trial_ended_before[2(3)]", FeatureUse, Tenant{Status: Trial, ContractEnd: at.Add(-time.Hour)}, 0, RefusedTerminated},
		{"terminated_with_consent[2(3)]", AppAccess, Tenant{Status: Terminated, Consents: consentCases[1].consents(at)}, 0, RefusedTerminated},
		{"undated_consent_counts_as_none[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Purposes: SetOf(ExternalConsented)}}}, allFeatureUse, ""},
		{"consent_at_collection_time_counts[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Purposes: SetOf(ExternalConsented), At: at}}}, allFeatureUse.Add(ExternalConsented), ""},
		{"consent_withdrawn_before[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Purposes: SetOf(ExternalConsented), At: at.Add(-48 * time.Hour), Withdrawn: at.Add(-time.Hour)}}}, allFeatureUse, ""},
		{"consent_withdrawn_after[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Purposes: SetOf(ExternalConsented), At: at.Add(-48 * time.Hour), Withdrawn: at.Add(time.Hour)}}}, allFeatureUse.Add(ExternalConsented), ""},
		{"consent_to_other_purpose[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Purposes: SetOf(Marketing), At: at.Add(-time.Hour)}}}, allFeatureUse, ""},
		{"policy_consent_is_not_purpose_consent[3(2)-1]", FeatureUse, Tenant{Status: Beta, Consents: []Consent{{Version: 1, Policy: true, At: at.Add(-time.Hour)}}}, allFeatureUse, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := vs.Tag(tc.cat, tc.tenant, at)
			if d.Purposes != tc.want {
				t.Errorf("tag %q, want %q", d.Purposes, tc.want)
			}
			if tc.code == "" {
				return
			}
			e := vs.Explain(tc.cat, tc.tenant, at)
			for pur, r := range e.Refused {
				if r.Code != tc.code {
					t.Errorf("%s refused by %s (%v), want %s", pur, r.Code, r, tc.code)
				}
			}
		})
	}
}
