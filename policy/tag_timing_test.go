package policy

import (
	"testing"
	"time"
)

// benchSetup is the hot path's worst ordinary case: two versions in force, the
// newer needing consent, and a tenant with several consent records to scan.
func benchSetup(tb testing.TB) (*Versions, Tenant, time.Time) {
	vs := v1v2(tb, true)
	tenant := Tenant{
		ID: "acme", Status: Contracted, Edition: "standard", SizeBand: "50-249",
		Consents: []Consent{
			purposeConsent(1, SetOf(ExternalConsented), t2.Add(-90*24*time.Hour)),
			policyConsent(2, t2.Add(time.Hour)),
			purposeConsent(2, SetOf(ExternalConsented), t2.Add(time.Hour)),
		},
	}
	return vs, tenant, t3
}

func TestTagAllocatesNothing(t *testing.T) {
	vs, tenant, at := benchSetup(t)
	var sink Set
	allocs := testing.AllocsPerRun(1000, func() {
		for _, c := range Categories() {
			sink |= vs.Tag(c, tenant, at).Purposes
		}
	})
	if allocs != 0 {
		t.Errorf("Tag allocates %.1f times a call", allocs/float64(len(Categories())))
	}
	if sink == 0 {
		t.Error("no purposes at all")
	}
}

func BenchmarkTag(b *testing.B) {
	vs, tenant, at := benchSetup(b)
	cats := Categories()
	b.ReportAllocs()
	var sink Set
	i := 0
	for b.Loop() {
		sink |= vs.Tag(cats[i%len(cats)], tenant, at).Purposes
		i++
	}
	if sink == 0 {
		b.Fatal("no purposes")
	}
}

// The tenant did not consent to v2: Tag looks at v2, falls back to v1.
func BenchmarkTagFallback(b *testing.B) {
	vs, tenant, at := benchSetup(b)
	tenant.Consents = tenant.Consents[:1]
	b.ReportAllocs()
	var sink Set
	for b.Loop() {
		sink |= vs.Tag(FeatureUse, tenant, at).Purposes
	}
	if sink == 0 {
		b.Fatal("no purposes")
	}
}

func BenchmarkTagParallel(b *testing.B) {
	vs, tenant, at := benchSetup(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var sink Set
		n := 0
		for pb.Next() {
			sink |= vs.Tag(AppAccess, tenant, at).Purposes
			n++
		}
		if n > 0 && sink == 0 {
			b.Error("no purposes")
		}
	})
}

func BenchmarkExplain(b *testing.B) {
	vs, tenant, at := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = vs.Explain(Operation, tenant, at)
	}
}
