package policy

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// RefusalCode names the rule that refused a purpose. Codes are stable (metric
// label values, report columns): never rename one, only add.
type RefusalCode string

// The refusal codes, in the order the rules are checked.
const (
	RefusedUnknownCategory RefusalCode = "unknown_category" // the event's schema names no category
	RefusedUnknownStatus   RefusalCode = "unknown_status"   // the tenant is not in the registry
	RefusedTerminated      RefusalCode = "terminated"       // contract ended: only deletion (2(3))
	RefusedVersionConsent  RefusalCode = "version_consent"  // a newer version would grant it, but the tenant did not consent to it (4)
	RefusedNotNeeded       RefusalCode = "not_needed"       // the cell is none: the purpose does not need the category
	RefusedStatus          RefusalCode = "status"           // the purpose does not apply to the tenant's status
	RefusedNoConsent       RefusalCode = "no_consent"       // the purpose needs the tenant's consent, not in force
)

// Refusal says why a purpose was refused: the rule and the clause it rests on.
type Refusal struct {
	Code   RefusalCode
	Rule   string
	Clause string
}

// String returns "rule (clause)".
func (r Refusal) String() string { return r.Rule + " (" + r.Clause + ")" }

// Explanation is the reasoning behind a Decision: which versions were
// considered and why one applied, and per purpose the grant or the refusal.
type Explanation struct {
	Category        Category
	TenantID        string
	Status          Status // the tenant's status in the registry
	EffectiveStatus Status // the status that decided: terminated once the contract ended
	At              time.Time
	Decision        // Refused is filled: one entry per purpose not granted
	Steps           []Step
	Grants          []Grant // one per purpose, in bit order
}

// Step is one policy version Explain considered, newest first; the last step
// is the version that applied.
type Step struct {
	Version int
	Applied bool
	Why     string
}

// Grant is the decision for one purpose.
type Grant struct {
	Purpose     Purpose
	Clause      string      // the purpose's clause under the applied version
	Granularity Granularity // the cell under the applied version
	Granted     bool
	Note        string  // for a granted purpose: what it may see, and its conditions
	Refusal     Refusal // for a refused purpose
}

// Explain returns what Tag decides for the same arguments, with the reasons.
// It allocates; use it for `shukei policy explain`, audits and tests, not per
// event.
func (v *Versions) Explain(cat Category, t Tenant, at time.Time) Explanation {
	s := v.cur.Load()
	st := t.statusAt(at)
	e := Explanation{Category: cat, TenantID: t.ID, Status: t.Status, EffectiveStatus: st, At: at}

	var applied *compiled
	var skipped []*compiled // newer versions in force that the tenant did not consent to
	for i := len(s.vs) - 1; i >= 0 && applied == nil; i-- {
		c := &s.vs[i]
		step := Step{Version: c.p.Version}
		switch {
		case i >= s.active:
			step.Why = "not activated"
		case i > 0 && at.Before(s.from[i]):
			step.Why = "in force from " + s.from[i].Format(time.RFC3339) + ", after the data was collected"
		case c.p.RequiresConsent && !t.consentedTo(c.p.Version, at):
			step.Why = consentWhy(&t, c.p.Version, 0, at, fmt.Sprintf("policy v%d", c.p.Version)) + "; the version requires it (4)"
			skipped = append(skipped, c)
		default:
			applied, step.Applied = c, true
			switch {
			case i == 0:
				step.Why = "baseline, in force from the beginning"
			default:
				step.Why = "in force since " + s.from[i].Format(time.RFC3339)
			}
			if c.p.RequiresConsent {
				step.Why += "; " + consentWhy(&t, c.p.Version, 0, at, fmt.Sprintf("policy v%d", c.p.Version))
			}
		}
		e.Steps = append(e.Steps, step)
	}
	if applied == nil { // unreachable: v1 always applies
		applied = &s.vs[0]
	}
	p := applied.p
	e.Version = p.Version
	e.Purposes = applied.grant(cat, st, &t, at)
	e.Refused = make(map[Purpose]Refusal, numPurposes-e.Purposes.Len())

	for _, pur := range Purposes() {
		r := p.Purposes[pur]
		g := Grant{Purpose: pur, Clause: r.Clause, Granularity: p.Cell(cat, pur), Granted: e.Purposes.Has(pur)}
		if g.Granted {
			g.Note = grantNote(p, pur, g.Granularity, &t, at)
		} else {
			g.Refusal = refusal(applied, pur, cat, st, &t, at, skipped)
			e.Refused[pur] = g.Refusal
		}
		e.Grants = append(e.Grants, g)
	}
	return e
}

// refusal finds the first rule that refuses pur, in RefusalCode order.
func refusal(applied *compiled, pur Purpose, cat Category, st Status, t *Tenant, at time.Time, skipped []*compiled) Refusal {
	p := applied.p
	r := p.Purposes[pur]
	switch {
	case !cat.Valid():
		return Refusal{RefusedUnknownCategory, "the event's schema names no category of usage data", "1"}
	case st == StatusUnknown:
		return Refusal{RefusedUnknownStatus, "tenant status unknown: register the tenant's contract status before its events are tagged", "2(5)"}
	case st == Terminated && t.Status != Terminated:
		return Refusal{RefusedTerminated, "contract ended at " + t.ContractEnd.Format(time.RFC3339) + ": terminated tenants get no new purposes, their data is only deleted", "2(3)"}
	case st == Terminated:
		return Refusal{RefusedTerminated, "terminated tenants get no new purposes, their data is only deleted", "2(3)"}
	}
	if !applied.grants[cat][st].Has(pur) {
		// A newer version the tenant did not consent to would allow it: that
		// consent is what is missing, not the applied version's cell.
		for _, c := range skipped {
			if c.grants[cat][st].Has(pur) {
				return Refusal{RefusedVersionConsent, fmt.Sprintf("%s; policy v%d allows %s for %s",
					consentWhy(t, c.p.Version, 0, at, fmt.Sprintf("policy v%d", c.p.Version)), c.p.Version, cat, pur), "4"}
			}
		}
		if p.Cell(cat, pur) == None {
			return Refusal{RefusedNotNeeded, fmt.Sprintf("category %s not needed for %s", cat, pur), r.Clause}
		}
		return Refusal{RefusedStatus, fmt.Sprintf("%s does not apply to %s tenants", pur, st), r.Clause}
	}
	if r.Consent {
		return Refusal{RefusedNoConsent, consentWhy(t, p.Version, SetOf(pur), at, fmt.Sprintf("%s under policy v%d", pur, p.Version)), r.Clause}
	}
	// Not reached while Tag and refusal agree; say so rather than invent a rule.
	return Refusal{"", "refused by no known rule (a bug in package policy)", "-"}
}

// consentWhy describes the state of the tenant's consent to policy version v
// (purposes == 0) or to purposes under version v, at time at.
func consentWhy(t *Tenant, v int, purposes Set, at time.Time, what string) string {
	var later, withdrawn, undated *Consent
	for i := range t.Consents {
		c := &t.Consents[i]
		if c.Version != v || (purposes == 0 && !c.Policy) || (purposes != 0 && c.Purposes&purposes == 0) {
			continue
		}
		switch {
		case c.inForce(at):
			return "consent to " + what + " recorded at " + c.At.Format(time.RFC3339)
		case c.At.IsZero():
			undated = c
		case c.At.After(at):
			later = c
		default:
			withdrawn = c
		}
	}
	switch {
	case withdrawn != nil:
		return "consent to " + what + " withdrawn at " + withdrawn.Withdrawn.Format(time.RFC3339)
	case later != nil:
		return "consent to " + what + " recorded at " + later.At.Format(time.RFC3339) + ", after the data was collected"
	case undated != nil:
		return "consent to " + what + " has no time recorded, so it counts as none"
	}
	return "no consent recorded for " + what
}

func grantNote(p *Policy, pur Purpose, g Granularity, t *Tenant, at time.Time) string {
	r := p.Purposes[pur]
	parts := []string{g.Describe(p.K)}
	if g == DPOnly && r.Budget != nil {
		parts = append(parts, fmt.Sprintf("budget ε=%g, δ=%g a month", r.Budget.EpsilonPerMonth, r.Budget.DeltaPerMonth))
	}
	if r.Condition == OpenTicket {
		parts = append(parts, "only while a support ticket from the tenant is open (the query layer checks)")
	}
	if r.Consent {
		parts = append(parts, consentWhy(t, p.Version, SetOf(pur), at, fmt.Sprintf("%s under policy v%d", pur, p.Version)))
	}
	return strings.Join(parts, "; ")
}

// String prints the explanation as a readable table.
func (e Explanation) String() string {
	var b strings.Builder
	status := e.Status.String()
	if e.EffectiveStatus != e.Status {
		status += ", counts as " + e.EffectiveStatus.String()
	}
	fmt.Fprintf(&b, "category %s, tenant %s (%s), data collected at %s\n", e.Category, e.TenantID, status, e.At.Format(time.RFC3339))
	fmt.Fprintf(&b, "policy v%d applies:\n", e.Version)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, s := range e.Steps {
		verdict := "skipped"
		if s.Applied {
			verdict = "applied"
		}
		fmt.Fprintf(tw, "  v%d\t%s\t%s\n", s.Version, verdict, s.Why)
	}
	tw.Flush()
	tag := e.Purposes.String()
	if tag == "" {
		tag = "(none: keep the event for no purpose)"
	}
	fmt.Fprintf(&b, "tag: %s\n\n", tag)

	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PURPOSE\tDECISION\tGRANULARITY\tCLAUSE\tWHY")
	for _, g := range e.Grants {
		if g.Granted {
			fmt.Fprintf(tw, "%s\tgranted\t%s\t%s\t%s\n", g.Purpose, g.Granularity, g.Clause, g.Note)
		} else {
			fmt.Fprintf(tw, "%s\trefused\t%s\t%s\t%s\n", g.Purpose, g.Granularity, g.Refusal.Clause, g.Refusal.Rule)
		}
	}
	tw.Flush()
	return b.String()
}
