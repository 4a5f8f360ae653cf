package policy

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	t2 = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC) // v2's activation in these tests
	t3 = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
)

// variant parses file with each old→new replacement applied (pairs).
func variant(t testing.TB, file string, oldNew ...string) *Policy {
	t.Helper()
	s := string(readFile(t, file))
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("%s has no %q", file, oldNew[i])
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return mustParse(t, []byte(s))
}

// v3Notice is a v3 that needs no consent and returns to v1's matrix.
func v3Notice(t testing.TB) *Policy {
	return variant(t, "v1.yaml", "version: 1\n", "version: 3\n")
}

// v1v2 returns v1 and the fixture v2 (it widens external_consented to operation
// and requires consent), with v2 activated at t2 when activate is set.
func v1v2(t testing.TB, activate bool) *Versions {
	t.Helper()
	vs, err := NewVersions(mustParse(t, readFile(t, "v1.yaml")), mustParse(t, readFile(t, "testdata/v2.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	if activate {
		if err := vs.Activate(2, t2); err != nil {
			t.Fatal(err)
		}
	}
	return vs
}

func policyConsent(v int, at time.Time) Consent { return Consent{Version: v, Policy: true, At: at} }

func purposeConsent(v int, s Set, at time.Time) Consent {
	return Consent{Version: v, Purposes: s, At: at}
}

// TestVersionsPrecedence: Tag picks the newest version in force when the data
// was collected that applies to the tenant, and falls back to older ones.
func TestVersionsPrecedence(t *testing.T) {
	at := t2.Add(30 * 24 * time.Hour) // data collected a month after v2's activation
	before, after := at.Add(-time.Hour), at.Add(time.Hour)
	ec := SetOf(ExternalConsented)
	for _, tc := range []struct {
		name       string
		activate   bool
		at         time.Time
		status     Status
		consents   []Consent
		version    int
		operation  bool        // operation → external_consented granted (only v2 has the cell)
		featureUse bool        // feature_use → external_consented granted (v1 and v2)
		refusal    RefusalCode // why operation → external_consented was refused
		clause     string
	}{
		{name: "v2_not_activated[4]", at: at, consents: []Consent{policyConsent(2, before), purposeConsent(2, ec, before)},
			version: 1, refusal: RefusedNotNeeded, clause: "3(2)-1"},
		{name: "collected_before_v2_activation[4]", activate: true, at: t2.Add(-time.Minute), consents: []Consent{policyConsent(2, t2.Add(-time.Hour)), purposeConsent(2, ec, t2.Add(-time.Hour))},
			version: 1, refusal: RefusedNotNeeded, clause: "3(2)-1"},
		{name: "no_consent_stays_on_v1[4]", activate: true, at: at,
			version: 1, refusal: RefusedVersionConsent, clause: "4"},
		{name: "v1_purpose_consent_stays_on_v1[4]", activate: true, at: at, consents: []Consent{purposeConsent(1, ec, before)},
			version: 1, featureUse: true, refusal: RefusedVersionConsent, clause: "4"},
		{name: "purpose_consent_without_v2_consent[4]", activate: true, at: at, consents: []Consent{purposeConsent(2, ec, before)},
			version: 1, refusal: RefusedVersionConsent, clause: "4"},
		{name: "consent_to_v2_before_collection[4]", activate: true, at: at, consents: []Consent{policyConsent(2, before), purposeConsent(2, ec, before)},
			version: 2, operation: true, featureUse: true},
		{name: "consent_to_v2_at_collection_time[4]", activate: true, at: at, consents: []Consent{policyConsent(2, at), purposeConsent(2, ec, at)},
			version: 2, operation: true, featureUse: true},
		{name: "consent_to_v2_after_collection[4]", activate: true, at: at, consents: []Consent{policyConsent(2, after), purposeConsent(2, ec, after)},
			version: 1, refusal: RefusedVersionConsent, clause: "4"},
		{name: "consent_to_v2_withdrawn[4]", activate: true, at: at, consents: []Consent{{Version: 2, Policy: true, Purposes: ec, At: at.Add(-48 * time.Hour), Withdrawn: before}},
			version: 1, refusal: RefusedVersionConsent, clause: "4"},
		{name: "consent_to_v2_undated[4]", activate: true, at: at, consents: []Consent{{Version: 2, Policy: true, Purposes: ec}},
			version: 1, refusal: RefusedVersionConsent, clause: "4"},
		{name: "v2_without_purpose_consent[3(2)-1]", activate: true, at: at, consents: []Consent{policyConsent(2, before)},
			version: 2, refusal: RefusedNoConsent, clause: "3(2)-1"},
		// Consent is for the version that applies: a v1 consent to share does not
		// cover v2's terms, so the tenant shares nothing until it consents again.
		{name: "purpose_consent_for_v1_under_v2[3(2)-1]", activate: true, at: at, consents: []Consent{policyConsent(2, before), purposeConsent(1, ec, before)},
			version: 2, refusal: RefusedNoConsent, clause: "3(2)-1"},
		{name: "terminated_under_v2[2(3)]", activate: true, at: at, status: Terminated, consents: []Consent{policyConsent(2, before), purposeConsent(2, ec, before)},
			version: 2, refusal: RefusedTerminated, clause: "2(3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := v1v2(t, tc.activate)
			st := tc.status
			if st == StatusUnknown {
				st = Contracted
			}
			tenant := Tenant{ID: "acme", Status: st, Consents: tc.consents}
			op := vs.Tag(Operation, tenant, tc.at)
			fu := vs.Tag(FeatureUse, tenant, tc.at)
			if op.Version != tc.version || fu.Version != tc.version {
				t.Errorf("versions %d, %d, want %d", op.Version, fu.Version, tc.version)
			}
			if op.Purposes.Has(ExternalConsented) != tc.operation {
				t.Errorf("operation → external_consented = %v, want %v", !tc.operation, tc.operation)
			}
			if fu.Purposes.Has(ExternalConsented) != tc.featureUse {
				t.Errorf("feature_use → external_consented = %v, want %v", !tc.featureUse, tc.featureUse)
			}
			e := vs.Explain(Operation, tenant, tc.at)
			if e.Version != op.Version || e.Purposes != op.Purposes {
				t.Errorf("Explain says v%d %q, Tag v%d %q", e.Version, e.Purposes, op.Version, op.Purposes)
			}
			if last := e.Steps[len(e.Steps)-1]; !last.Applied || last.Version != tc.version {
				t.Errorf("last step %+v", last)
			}
			if tc.operation {
				return
			}
			r := e.Refused[ExternalConsented]
			if r.Code != tc.refusal || r.Clause != tc.clause {
				t.Errorf("refusal %s %v, want %s (%s)", r.Code, r, tc.refusal, tc.clause)
			}
		})
	}
}

// Apart from external_consented on operation, v2 changes nothing: a tenant
// that consented to v2 keeps exactly its v1 purposes.
func TestV2KeepsV1Purposes(t *testing.T) {
	vs := v1v2(t, true)
	at := t3
	consented := Tenant{Status: Contracted, Consents: []Consent{policyConsent(2, t2)}}
	for _, c := range Categories() {
		t.Run(c.String()+"[4]", func(t *testing.T) {
			d2 := vs.Tag(c, consented, at)
			d1 := vs.Tag(c, Tenant{Status: Contracted}, at)
			if d2.Version != 2 || d1.Version != 1 {
				t.Fatalf("versions %d, %d", d2.Version, d1.Version)
			}
			if d1.Purposes != d2.Purposes {
				t.Errorf("v1 %q, v2 %q", d1.Purposes, d2.Purposes)
			}
		})
	}
}

// The newest version that applies wins, even one that needs no consent over
// an older one the tenant consented to.
func TestNewestApplyingVersionWins(t *testing.T) {
	vs, err := NewVersions(mustParse(t, readFile(t, "v1.yaml")), mustParse(t, readFile(t, "testdata/v2.yaml")), v3Notice(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		v  int
		at time.Time
	}{{2, t2}, {3, t3}} {
		if err := vs.Activate(a.v, a.at); err != nil {
			t.Fatal(err)
		}
	}
	consented := Tenant{Status: Contracted, Consents: []Consent{policyConsent(2, t2), purposeConsent(2, SetOf(ExternalConsented), t2), purposeConsent(3, SetOf(ExternalConsented), t3)}}
	for _, tc := range []struct {
		name      string
		tenant    Tenant
		at        time.Time
		version   int
		operation bool
	}{
		{"before_v2[4]", consented, t2.Add(-time.Second), 1, false},
		{"between_v2_and_v3_consented[4]", consented, t2.Add(time.Hour), 2, true},
		{"between_v2_and_v3_not_consented[4]", Tenant{Status: Contracted}, t2.Add(time.Hour), 1, false},
		{"after_v3_consented[4]", consented, t3, 3, false},
		{"after_v3_not_consented[4]", Tenant{Status: Contracted}, t3.Add(time.Hour), 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := vs.Tag(Operation, tc.tenant, tc.at)
			if d.Version != tc.version || d.Purposes.Has(ExternalConsented) != tc.operation {
				t.Errorf("v%d %q, want v%d with external_consented %v", d.Version, d.Purposes, tc.version, tc.operation)
			}
		})
	}
}

func TestActivate(t *testing.T) {
	vs, err := NewVersions(mustParse(t, readFile(t, "v1.yaml")), mustParse(t, readFile(t, "testdata/v2.yaml")), v3Notice(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		version int
		at      time.Time
		err     string // "" for success
	}{
		{"v1_is_always_in_force", 1, t2, "in force from the beginning"},
		{"unknown_version", 4, t2, "no policy v4"},
		{"out_of_order", 3, t3, "activate policy v2 first"},
		{"no_time", 2, time.Time{}, "no activation time"},
		{"v2", 2, t2, ""},
		{"v2_again_same_time", 2, t2, ""},
		{"v2_moved", 2, t3, "cannot move"},
		{"v3_before_v2", 3, t2.Add(-time.Hour), "before v2"},
		{"v3", 3, t3, ""},
	} {
		t.Run(step.name, func(t *testing.T) {
			err := vs.Activate(step.version, step.at)
			switch {
			case step.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case step.err != "" && (err == nil || !strings.Contains(err.Error(), step.err)):
				t.Errorf("err = %v, want %q", err, step.err)
			}
		})
	}
	if at, ok := vs.Activation(1); !ok || !at.IsZero() {
		t.Errorf("Activation(1) = %v, %v", at, ok)
	}
	if at, ok := vs.Activation(2); !ok || !at.Equal(t2) {
		t.Errorf("Activation(2) = %v, %v", at, ok)
	}
	if _, ok := vs.Activation(4); ok {
		t.Error("Activation(4) ok")
	}
	for _, tc := range []struct {
		at   time.Time
		want int
	}{{t2.Add(-time.Nanosecond), 1}, {t2, 2}, {t3.Add(-time.Nanosecond), 2}, {t3, 3}} {
		if got := vs.InForce(tc.at).Version; got != tc.want {
			t.Errorf("InForce(%v) = v%d, want v%d", tc.at, got, tc.want)
		}
	}
	if vs.Len() != 3 || vs.Policy(3).Version != 3 || vs.Policy(0) != nil || vs.Policy(4) != nil {
		t.Error("Len/Policy")
	}
}

func TestNewVersionsErrors(t *testing.T) {
	v1 := mustParse(t, readFile(t, "v1.yaml"))
	v2 := mustParse(t, readFile(t, "testdata/v2.yaml"))
	badK := mustParse(t, readFile(t, "v1.yaml"))
	badK.K = 1
	for _, tc := range []struct {
		name string
		ps   []*Policy
		err  string // "" for success
	}{
		{"none", nil, "no policy versions"},
		{"nil", []*Policy{v1, nil}, "nil policy"},
		{"gap", []*Policy{v1, variant(t, "testdata/v2.yaml", "version: 2\n", "version: 3\n")}, "found v3 where v2 belongs"},
		{"repeat", []*Policy{v1, v1}, "found v1 where v2 belongs"},
		{"invalid", []*Policy{badK}, "k: must be at least 2"},
		{"any_order", []*Policy{v2, v1}, ""},
		// Clause 4: a notice-only version cannot hand every tenant what an
		// earlier version gave only with consent.
		{"notice_carries_consented_widening[4]", []*Policy{v1, v2, variant(t, "testdata/v2.yaml", "version: 2\n", "version: 3\n", "requires_consent: true", "requires_consent: false")},
			"v3: matrix.operation.external_consented: v3 needs no consent but widens the cell beyond v1, as v2 did only with consent (4)"},
		{"consented_carry_over[4]", []*Policy{v1, v2, variant(t, "testdata/v2.yaml", "version: 2\n", "version: 3\n")}, ""},
		{"notice_narrows_back[4]", []*Policy{v1, v2, v3Notice(t)}, ""},
		// A notice-only widening of a cell no consent version touched is the
		// vendor's call under clause 4 (notice suffices unless the law requires consent).
		{"notice_widens_other_cell[4]", []*Policy{v1, v2, variant(t, "v1.yaml", "version: 1\n", "version: 3\n",
			"    marketing: none                  # 3(1)-3: adoption and activity suffice", "    marketing: aggregate #")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVersions(tc.ps...)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("err = %v, want %q", err, tc.err)
			case tc.err != "" && !errors.Is(err, ErrInvalid):
				t.Errorf("err does not wrap ErrInvalid: %v", err)
			}
		})
	}
}

// Tag and Explain run concurrently with Activate (go test -race).
func TestConcurrentTagAndActivate(t *testing.T) {
	vs := v1v2(t, false)
	tenant := Tenant{Status: Contracted, Consents: []Consent{policyConsent(2, t2), purposeConsent(2, SetOf(ExternalConsented), t2)}}
	at := t3
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				d := vs.Tag(Operation, tenant, at)
				if d.Version == 2 != d.Purposes.Has(ExternalConsented) {
					t.Errorf("inconsistent decision %+v", d)
					return
				}
				_ = vs.Explain(FeatureUse, tenant, at)
			}
		})
	}
	if err := vs.Activate(2, t2); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if d := vs.Tag(Operation, tenant, at); d.Version != 2 {
		t.Errorf("after activation: v%d", d.Version)
	}
}
