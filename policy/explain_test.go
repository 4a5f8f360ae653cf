package policy

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Explain must decide exactly what Tag decides, and give a reason for every
// purpose it refuses.
func TestExplainAgreesWithTag(t *testing.T) {
	vs := v1v2(t, true)
	at := t2.Add(time.Hour)
	tenants := map[string]Tenant{
		"unknown":             {},
		"trial":               {Status: Trial},
		"beta_v1_consent":     {Status: Beta, Consents: []Consent{purposeConsent(1, SetOf(ExternalConsented), t2)}},
		"contracted_v2":       {Status: Contracted, Consents: []Consent{policyConsent(2, t2), purposeConsent(2, AllPurposes, t2)}},
		"contracted_v2_later": {Status: Contracted, Consents: []Consent{policyConsent(2, at.Add(time.Hour))}},
		"contract_ended":      {Status: Contracted, ContractEnd: t2},
		"terminated":          {Status: Terminated},
	}
	for name, tenant := range tenants {
		for _, c := range append(Categories(), 0) {
			t.Run(name+"/"+c.String(), func(t *testing.T) {
				d := vs.Tag(c, tenant, at)
				e := vs.Explain(c, tenant, at)
				if e.Version != d.Version || e.Purposes != d.Purposes {
					t.Fatalf("Explain v%d %q, Tag v%d %q", e.Version, e.Purposes, d.Version, d.Purposes)
				}
				if len(e.Grants) != len(Purposes()) {
					t.Fatalf("%d grants", len(e.Grants))
				}
				for _, g := range e.Grants {
					if g.Granted != d.Purposes.Has(g.Purpose) {
						t.Errorf("%s: granted %v, tag %q", g.Purpose, g.Granted, d.Purposes)
					}
					r, refused := e.Refused[g.Purpose]
					if refused == g.Granted {
						t.Errorf("%s: granted %v but refused %v", g.Purpose, g.Granted, refused)
					}
					if refused && (r.Code == "" || r.Rule == "" || !validClause(r.Clause)) {
						t.Errorf("%s: incomplete refusal %+v", g.Purpose, r)
					}
				}
				if s := e.String(); !strings.Contains(s, "policy v") || strings.Count(s, "\n") < 10 {
					t.Errorf("String():\n%s", s)
				}
			})
		}
	}
}

// The table `shukei policy explain` prints, for a few telling cases.
func TestExplainGolden(t *testing.T) {
	vs := v1v2(t, true)
	at := t2.Add(24 * time.Hour)
	var b bytes.Buffer
	for _, tc := range []struct {
		cat    Category
		tenant Tenant
	}{
		{FeatureUse, Tenant{ID: "acme", Status: Trial}},
		{Operation, Tenant{ID: "globex", Status: Contracted, Consents: []Consent{purposeConsent(2, SetOf(ExternalConsented), t2)}}},
		{Operation, Tenant{ID: "initech", Status: Contracted, Consents: []Consent{policyConsent(2, t2), purposeConsent(2, SetOf(ExternalConsented), t2)}}},
		{Settings, Tenant{ID: "umbrella", Status: Contracted, ContractEnd: t2}},
	} {
		fmt.Fprintf(&b, "$ shukei policy explain --category %s --tenant %s\n%s\n", tc.cat, tc.tenant.ID, vs.Explain(tc.cat, tc.tenant, at))
	}
	golden(t, "testdata/explain.golden.txt", b.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update and review the diff); got:\n%s", name, got)
	}
}
