package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every error Parse and Validate return for a policy
// that is not acceptable.
var ErrInvalid = errors.New("invalid policy")

// Problem is one thing wrong with a policy, at a path in the file
// ("matrix.settings.support").
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string { return p.Path + ": " + p.Msg }

// ValidationError lists every problem found in a policy. It wraps ErrInvalid.
type ValidationError struct {
	Version  int // 0 when the file did not say
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	if e.Version > 0 {
		fmt.Fprintf(&b, " v%d", e.Version)
	}
	fmt.Fprintf(&b, " (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteString("; fix the policy file):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

// file is the YAML form of a policy. Maps are keyed by id, so that an unknown id
// is reported by name rather than rejected by the decoder.
type file struct {
	Version         int                          `yaml:"version"`
	Title           string                       `yaml:"title"`
	Enacted         string                       `yaml:"enacted"`
	RequiresConsent bool                         `yaml:"requires_consent"`
	K               *int                         `yaml:"k"`
	Retention       fileRetention                `yaml:"retention"`
	Categories      map[string]fileCategory      `yaml:"categories"`
	Purposes        map[string]filePurpose       `yaml:"purposes"`
	Matrix          map[string]map[string]string `yaml:"matrix"`
}

type fileRetention struct {
	AfterContractEndDays int `yaml:"after_contract_end_days"`
	EventStoreDays       int `yaml:"event_store_days"`
	DLQDays              int `yaml:"dlq_days"`
}

type fileCategory struct {
	Clause        string `yaml:"clause"`
	Description   string `yaml:"description"`
	DescriptionJA string `yaml:"description_ja"`
}

type filePurpose struct {
	Clause      string      `yaml:"clause"`
	Title       string      `yaml:"title"`
	TitleJA     string      `yaml:"title_ja"`
	Description string      `yaml:"description"`
	Statuses    []string    `yaml:"statuses"`
	Consent     string      `yaml:"consent"`
	Condition   string      `yaml:"condition"`
	Budget      *fileBudget `yaml:"budget"`
}

type fileBudget struct {
	EpsilonPerMonth float64 `yaml:"epsilon_per_month"`
	DeltaPerMonth   float64 `yaml:"delta_per_month"`
}

// DefaultK is k when the policy file does not set it.
const DefaultK = 5

// MinK is the fewest tenants k may ever be: a cell of one tenant is that tenant's data. The
// policy, the query service and the gate (gate.Enough) all hold k to it.
const MinK = 2

const day = 24 * time.Hour

// Parse reads one policy version from YAML. Decoding is strict: an unknown
// field, a duplicate key or a second document is an error. The policy is then
// validated; the error lists every problem (see ValidationError).
func Parse(b []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty policy file", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document; a policy file holds exactly one version", ErrInvalid)
	}

	var probs problems
	p := f.convert(&probs)
	// A value convert could not read is reported once, not again as missing.
	reported := make(map[string]bool, len(probs))
	for _, pr := range probs {
		reported[pr.Path] = true
	}
	for _, pr := range p.problems() {
		if !reported[pr.Path] {
			probs = append(probs, pr)
		}
	}
	if len(probs) > 0 {
		return nil, &ValidationError{Version: f.Version, Problems: probs}
	}
	return p, nil
}

type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// convert turns the file into a Policy, reporting what cannot be represented:
// unknown ids and values. What can be represented is checked by Validate.
func (f *file) convert(probs *problems) *Policy {
	p := &Policy{
		Version:         f.Version,
		Title:           f.Title,
		RequiresConsent: f.RequiresConsent,
		K:               DefaultK,
		Retention: Retention{
			AfterContractEnd: time.Duration(f.Retention.AfterContractEndDays) * day,
			EventStore:       time.Duration(f.Retention.EventStoreDays) * day,
			DLQ:              time.Duration(f.Retention.DLQDays) * day,
		},
		Categories: make(map[Category]CategoryInfo, numCategories),
		Purposes:   make(map[Purpose]PurposeRule, numPurposes),
		Matrix:     make(map[Category]map[Purpose]Granularity, numCategories),
	}
	if f.K != nil {
		p.K = *f.K
	}
	if f.Enacted != "" {
		t, err := time.Parse(time.DateOnly, f.Enacted)
		if err != nil {
			probs.add("enacted", "%q is not a date YYYY-MM-DD", f.Enacted)
		}
		p.Enacted = t
	}
	for _, id := range sortedKeys(f.Categories) {
		fc := f.Categories[id]
		c, err := ParseCategory(id)
		if err != nil {
			probs.add("categories."+id, "unknown category %q (known: %s)", id, strings.Join(categoryNames[1:], ", "))
			continue
		}
		p.Categories[c] = CategoryInfo{Clause: fc.Clause, Description: fc.Description, DescriptionJA: fc.DescriptionJA}
	}

	for _, id := range sortedKeys(f.Purposes) {
		fp := f.Purposes[id]
		path := "purposes." + id
		pur, err := ParsePurpose(id)
		if err != nil {
			probs.add(path, "unknown purpose %q (known: %s); a new purpose needs a new bit in package policy", id, strings.Join(purposeNames[:], ", "))
			continue
		}
		r := PurposeRule{Clause: fp.Clause, Title: fp.Title, TitleJA: fp.TitleJA, Description: fp.Description}
		for i, s := range fp.Statuses {
			st, err := ParseStatus(s)
			if err != nil {
				probs.add(fmt.Sprintf("%s.statuses[%d]", path, i), "unknown status %q (known: trial, beta, contracted, terminated)", s)
				continue
			}
			r.Statuses = append(r.Statuses, st)
		}
		switch fp.Consent {
		case "none":
		case "required":
			r.Consent = true
		case "":
			probs.add(path+".consent", "missing: say none or required")
		default:
			probs.add(path+".consent", "%q is not one of none, required", fp.Consent)
		}
		switch fp.Condition {
		case "none":
		case "open_ticket":
			r.Condition = OpenTicket
		case "":
			probs.add(path+".condition", "missing: say none or open_ticket")
		default:
			probs.add(path+".condition", "%q is not one of none, open_ticket", fp.Condition)
		}
		if fp.Budget != nil {
			r.Budget = &Budget{EpsilonPerMonth: fp.Budget.EpsilonPerMonth, DeltaPerMonth: fp.Budget.DeltaPerMonth}
		}
		p.Purposes[pur] = r
	}

	for _, cid := range sortedKeys(f.Matrix) {
		row := f.Matrix[cid]
		c, err := ParseCategory(cid)
		if err != nil {
			probs.add("matrix."+cid, "unknown category %q (known: %s)", cid, strings.Join(categoryNames[1:], ", "))
			continue
		}
		cells := make(map[Purpose]Granularity, numPurposes)
		for _, pid := range sortedKeys(row) {
			path := "matrix." + cid + "." + pid
			pur, err := ParsePurpose(pid)
			if err != nil {
				probs.add(path, "unknown purpose %q (known: %s)", pid, strings.Join(purposeNames[:], ", "))
				continue
			}
			g, err := ParseGranularity(row[pid])
			if err != nil {
				probs.add(path, "unknown granularity %q (known: %s)", row[pid], strings.Join(granularityNames[:], ", "))
				continue
			}
			cells[pur] = g
		}
		p.Matrix[c] = cells
	}
	return p
}

const maxRetentionDays = 3650

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// purposeLimits is what docs/DESIGN.md §1 lets each purpose see at most, whatever a
// policy file says: the granularities allowed, and why.
var purposeLimits = [numPurposes]struct {
	allowed []Granularity
	why     string
}{
	Support:            {[]Granularity{None, TenantSummary, EventLevel}, "support works on one tenant's events (3(1)-1); never cross-tenant"},
	ServiceImprovement: {[]Granularity{None, DPOnly, Aggregate}, "service_improvement compares features across tenants (3(1)-2); no per-tenant data"},
	Marketing:          {[]Granularity{None, DPOnly, Aggregate}, "marketing compares segments of tenants (3(1)-3); no per-tenant data"},
	FollowUp:           {[]Granularity{None, DPOnly, Aggregate, TenantSummary}, "follow_up sees per-tenant summaries at most (3(1)-4); no per-user rows"},
	InterviewSelection: {[]Granularity{None, DPOnly, Aggregate, TenantSummary}, "interview_selection sees per-tenant summaries at most (3(1)-5); no per-user rows"},
	ExternalAggregate:  {[]Granularity{None, DPOnly}, "external_aggregate shares only data processed so no customer's usage can be inferred (3(2)-4): DP releases"},
	ExternalConsented:  {[]Granularity{None, TenantSummary}, "external_consented shares one tenant's own summaries (3(2)-1); no per-user rows leave the company"},
}

func allowedNames(gs []Granularity) string {
	ns := make([]string, len(gs))
	for i, g := range gs {
		ns[i] = g.String()
	}
	return strings.Join(ns, ", ")
}

// Validate reports every problem of p, each with its path in the policy file.
// It returns nil or a *ValidationError (which wraps ErrInvalid).
func (p *Policy) Validate() error {
	if probs := p.problems(); len(probs) > 0 {
		return &ValidationError{Version: p.Version, Problems: probs}
	}
	return nil
}

func (p *Policy) problems() problems {
	var probs problems
	if p.Version < 1 {
		probs.add("version", "must be at least 1, got %d", p.Version)
	}
	if p.Version == 1 && p.RequiresConsent {
		probs.add("requires_consent", "version 1 is the baseline every tenant starts on; it cannot require consent")
	}
	if p.K < MinK {
		probs.add("k", "must be at least %d (a cell of one tenant is that tenant's data), got %d", MinK, p.K)
	}
	for _, r := range [...]struct {
		path string
		d    time.Duration
	}{
		{"retention.after_contract_end_days", p.Retention.AfterContractEnd},
		{"retention.event_store_days", p.Retention.EventStore},
		{"retention.dlq_days", p.Retention.DLQ},
	} {
		if r.d < day || r.d > maxRetentionDays*day {
			probs.add(r.path, "must be between 1 and %d days, got %d", maxRetentionDays, r.d/day)
		}
	}
	if p.Retention.DLQ > p.Retention.EventStore && p.Retention.EventStore > 0 {
		probs.add("retention.dlq_days", "must not exceed event_store_days: a DLQ record would outlive the store it is replayed into")
	}

	// A Policy built in Go can hold keys no file could name.
	for c := range p.Categories {
		if !c.Valid() {
			probs.add("categories", "unknown %v", c)
		}
	}
	for pur := range p.Purposes {
		if !pur.Valid() {
			probs.add("purposes", "unknown %v", pur)
		}
	}
	for c, row := range p.Matrix {
		if !c.Valid() {
			probs.add("matrix", "unknown %v", c)
		}
		for pur, g := range row {
			if !pur.Valid() || g >= numGranularities {
				probs.add("matrix."+c.String(), "unknown %v or %v", pur, g)
			}
		}
	}

	for _, c := range Categories() {
		path := "categories." + c.String()
		info, ok := p.Categories[c]
		if !ok {
			probs.add(path, "missing: every category of clause 1 must be described")
			continue
		}
		checkClause(&probs, path+".clause", info.Clause)
		if strings.TrimSpace(info.Description) == "" {
			probs.add(path+".description", "missing")
		}
	}

	for _, pur := range Purposes() {
		path := "purposes." + pur.String()
		r, ok := p.Purposes[pur]
		if !ok {
			probs.add(path, "missing: every purpose must be declared (with statuses: [] to disable it)")
			continue
		}
		checkClause(&probs, path+".clause", r.Clause)
		if strings.TrimSpace(r.Description) == "" {
			probs.add(path+".description", "missing")
		}
		if len(r.Statuses) == 0 {
			for _, row := range p.Matrix {
				if row[pur] != None {
					probs.add(path+".statuses", "empty, but the matrix gives the purpose cells: list its statuses or set its cells to none")
					break
				}
			}
		}
		seen := map[Status]bool{}
		for i, s := range r.Statuses {
			spath := fmt.Sprintf("%s.statuses[%d]", path, i)
			switch {
			case s == Terminated:
				probs.add(spath, "terminated tenants get no new purposes; their data is only deleted (2(3))")
			case !s.Valid():
				probs.add(spath, "unknown status %d", s)
			case seen[s]:
				probs.add(spath, "%s listed twice", s)
			}
			seen[s] = true
		}
		switch {
		case pur == Support && r.Condition != OpenTicket:
			probs.add(path+".condition", "must be open_ticket: support may read a tenant's events only while its ticket is open (3(1)-1)")
		case pur != Support && r.Condition == OpenTicket:
			probs.add(path+".condition", "open_ticket is a condition of support only")
		}
		if pur == ExternalConsented && !r.Consent {
			probs.add(path+".consent", "must be required: external sharing of a tenant's data needs its consent (3(2)-1)")
		}
		dp := false
		for _, row := range p.Matrix {
			dp = dp || row[pur] == DPOnly
		}
		switch {
		case dp && r.Budget == nil:
			probs.add(path+".budget", "missing: the purpose has dp_only cells, so it needs epsilon_per_month and delta_per_month")
		case !dp && r.Budget != nil:
			probs.add(path+".budget", "the purpose has no dp_only cell; remove the budget or the mistake in the matrix")
		case r.Budget != nil:
			b := r.Budget
			if !(b.EpsilonPerMonth > 0 && b.EpsilonPerMonth <= maxEpsilon) {
				probs.add(path+".budget.epsilon_per_month", "must be in (0, %g], got %g", float64(maxEpsilon), b.EpsilonPerMonth)
			}
			if !(b.DeltaPerMonth > 0 && b.DeltaPerMonth <= maxDelta) || math.IsNaN(b.DeltaPerMonth) {
				probs.add(path+".budget.delta_per_month", "must be in (0, %g], got %g", maxDelta, b.DeltaPerMonth)
			}
		}
	}

	for _, c := range Categories() {
		path := "matrix." + c.String()
		row, ok := p.Matrix[c]
		if !ok {
			probs.add(path, "missing: every category needs a row, with none where no purpose may see it")
			continue
		}
		for _, pur := range Purposes() {
			cpath := path + "." + pur.String()
			g, ok := row[pur]
			if !ok {
				probs.add(cpath, "missing: decide the cell (none, dp_only, aggregate, tenant_summary or event)")
				continue
			}
			lim := purposeLimits[pur]
			if !slices.Contains(lim.allowed, g) {
				probs.add(cpath, "%s not allowed for %s (allowed: %s): %s", g, pur, allowedNames(lim.allowed), lim.why)
			}
		}
	}
	return probs
}

// Caps on a purpose's monthly budget. ε accumulates over a month's releases (31 daily windows
// at ε = 1 is 31); above 64 a month the tenant-level guarantee says nothing useful any more.
const (
	maxEpsilon = 64
	maxDelta   = 1e-5
)

func checkClause(probs *problems, path, clause string) {
	switch {
	case clause == "":
		probs.add(path, "missing: name the clause of the policy text (e.g. \"3(1)-2\")")
	case !validClause(clause):
		probs.add(path, "%q is not a clause reference like 1, 2(3) or 3(1)-2", clause)
	}
}

// validClause accepts N, N(M) and N(M)-K with positive integers.
func validClause(s string) bool {
	num := func(s string) (string, bool) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return s[i:], i > 0 && s[0] != '0'
	}
	rest, ok := num(s)
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	if rest[0] != '(' {
		return false
	}
	if rest, ok = num(rest[1:]); !ok || rest == "" || rest[0] != ')' {
		return false
	}
	rest = rest[1:]
	if rest == "" {
		return true
	}
	if rest[0] != '-' {
		return false
	}
	rest, ok = num(rest[1:])
	return ok && rest == ""
}
