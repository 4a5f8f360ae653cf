// Package policy is the vendor's data policy as code: which purposes (clause
// 3(1) and 3(2) of the policy) may use which category of usage data (clause 1),
// at which granularity, for which tenants, under which policy version (clause 4).
//
// A policy version is a YAML file (v1.yaml is the seed policy; later versions are
// v2.yaml, ...), parsed strictly by Parse and embedded in the binary (Embedded).
// Versions holds all versions with their activation times and answers, per
// event, the one question the pipeline asks: which purposes may this event serve?
// (Tag). Explain answers the follow-up question: why (not)?
//
// The tag is a Set of purposes, a uint16 whose bit positions are stable: it is
// stored with every event, so a purpose's bit never moves and is never reused.
//
// What the tagger cannot see is enforced where data is read: support's open
// ticket (OpenTicket), the k-threshold of aggregate cells (Policy.K), and the
// privacy budget of DP releases (PurposeRule.Budget).
//
// To publish a new version: add vN.yaml next to v1.yaml (requires_consent: true
// if clause 4 needs the tenants' consent), then activate it from configuration
// with Versions.Activate. testdata/v2.yaml is an example for tests only.
package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shukei/shukei/event"
)

// Purpose is a use of usage data the policy allows (docs/DESIGN.md §1). Its value is
// its bit position in a Set: never renumber, only add.
type Purpose uint8

// The purposes. The comments name the clause of the seed policy.
const (
	Support            Purpose = 0 // 3(1)-1: find the operation that caused a failure
	ServiceImprovement Purpose = 1 // 3(1)-2: rank features to improve by frequency
	Marketing          Purpose = 2 // 3(1)-3: compare contracted with not-contracted tenants
	FollowUp           Purpose = 3 // 3(1)-4: channel, content and timing of follow-up contact
	InterviewSelection Purpose = 4 // 3(1)-5: choose whom to interview
	ExternalAggregate  Purpose = 5 // 3(2)-4: DP cross-tenant releases shared outside
	ExternalConsented  Purpose = 6 // 3(2)-1: a tenant's own data shared outside, with consent

	numPurposes = 7
)

var purposeNames = [numPurposes]string{
	"support", "service_improvement", "marketing", "follow_up",
	"interview_selection", "external_aggregate", "external_consented",
}

// Purposes returns every purpose in bit order.
func Purposes() []Purpose {
	ps := make([]Purpose, numPurposes)
	for i := range ps {
		ps[i] = Purpose(i)
	}
	return ps
}

// Valid reports whether p is a purpose this build knows.
func (p Purpose) Valid() bool { return p < numPurposes }

// String returns the purpose id used in config, data and reports.
func (p Purpose) String() string {
	if p.Valid() {
		return purposeNames[p]
	}
	return fmt.Sprintf("purpose(%d)", uint8(p))
}

// External reports whether the purpose shares data outside the company (3(2)).
func (p Purpose) External() bool { return p == ExternalAggregate || p == ExternalConsented }

// ErrUnknown is wrapped by every Parse* function's error for an id it does not know.
var ErrUnknown = errors.New("unknown id")

// ParsePurpose returns the purpose with id s.
func ParsePurpose(s string) (Purpose, error) {
	for i, n := range purposeNames {
		if n == s {
			return Purpose(i), nil
		}
	}
	return 0, fmt.Errorf("%w: purpose %q (known: %s)", ErrUnknown, s, strings.Join(purposeNames[:], ", "))
}

// Set is a set of purposes, bit p for Purpose p: the tag stored with an event.
// The zero Set is empty: the event may serve no purpose and must not be kept.
type Set uint16

// SetOf returns the set of ps.
func SetOf(ps ...Purpose) Set {
	var s Set
	for _, p := range ps {
		s = s.Add(p)
	}
	return s
}

// Bit is p's bit in a Set: the value a purposes column holds for p alone.
func (p Purpose) Bit() uint16 { return uint16(SetOf(p)) }

// SQL is the ClickHouse condition that the purposes tag in column holds p —
// bitAnd(purposes, 4) != 0 for marketing — the one place a purpose's bit is written into a
// query. The migrations' views (migrations/*.sql, never edited once applied) write the same
// conditions; migrations' TestPurposeBitsArePolicys holds them to these bits.
func (p Purpose) SQL(column string) string {
	return "bitAnd(" + column + ", " + strconv.Itoa(int(p.Bit())) + ") != 0"
}

// AllPurposes is the set of every known purpose.
const AllPurposes Set = 1<<numPurposes - 1

// Has reports whether p is in s.
func (s Set) Has(p Purpose) bool { return p.Valid() && s&(1<<p) != 0 }

// Add returns s with p added. An unknown purpose is ignored.
func (s Set) Add(p Purpose) Set {
	if !p.Valid() {
		return s
	}
	return s | 1<<p
}

// Remove returns s without p.
func (s Set) Remove(p Purpose) Set {
	if !p.Valid() {
		return s
	}
	return s &^ (1 << p)
}

// Len returns the number of purposes in s.
func (s Set) Len() int {
	n := 0
	for x := s & AllPurposes; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// List returns the purposes in s in bit order.
func (s Set) List() []Purpose {
	var ps []Purpose
	for p := range Purpose(numPurposes) {
		if s.Has(p) {
			ps = append(ps, p)
		}
	}
	return ps
}

// String returns the purpose ids in bit order, comma-separated; "" for the empty set.
func (s Set) String() string {
	var b strings.Builder
	for _, p := range s.List() {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// ParseSet is the inverse of Set.String.
func ParseSet(s string) (Set, error) {
	var set Set
	if s == "" {
		return set, nil
	}
	for id := range strings.SplitSeq(s, ",") {
		p, err := ParsePurpose(strings.TrimSpace(id))
		if err != nil {
			return 0, err
		}
		set = set.Add(p)
	}
	return set, nil
}

// Category is a category of usage data (clause 1): the category part of an
// event's schema. The zero Category is unknown and serves no purpose.
type Category uint8

// The categories, one per event category (schemas/events).
const (
	TenantProfile Category = iota + 1
	ClientEnv
	AppAccess
	FeatureUse
	Settings
	Operation

	numCategories = 6
)

var categoryNames = [numCategories + 1]string{
	"", "tenant_profile", "client_env", "app_access", "feature_use", "settings", "operation",
}

// Categories returns every category.
func Categories() []Category {
	cs := make([]Category, numCategories)
	for i := range cs {
		cs[i] = Category(i + 1)
	}
	return cs
}

// Valid reports whether c is a category this build knows.
func (c Category) Valid() bool { return c >= 1 && c <= numCategories }

// String returns the category id, the category part of an event schema.
func (c Category) String() string {
	if c.Valid() {
		return categoryNames[c]
	}
	return fmt.Sprintf("category(%d)", uint8(c))
}

// ParseCategory returns the category with id s.
func ParseCategory(s string) (Category, error) {
	if c := categoryByName(s); c != 0 {
		return c, nil
	}
	return 0, fmt.Errorf("%w: category %q (known: %s)", ErrUnknown, s, strings.Join(categoryNames[1:], ", "))
}

func categoryByName(s string) Category {
	switch s {
	case "tenant_profile":
		return TenantProfile
	case "client_env":
		return ClientEnv
	case "app_access":
		return AppAccess
	case "feature_use":
		return FeatureUse
	case "settings":
		return Settings
	case "operation":
		return Operation
	}
	return 0
}

// CategoryOf returns the category of an event schema ("feature_use/v1" →
// FeatureUse), or the zero Category for a schema this build does not know.
// A new major version of a category keeps its category, and so its purposes.
func CategoryOf(s event.Schema) Category {
	name, version, ok := strings.Cut(string(s), "/")
	if !ok || len(version) < 2 || version[0] != 'v' || version[1] == '0' {
		return 0
	}
	for _, r := range version[1:] {
		if r < '0' || r > '9' {
			return 0
		}
	}
	return categoryByName(name)
}

// Granularity is the most detailed form in which a purpose may see a category.
// The values are ordered from least to most detailed.
type Granularity uint8

// The granularities. The zero Granularity is None.
const (
	None          Granularity = iota // the purpose never sees the category
	DPOnly                           // differentially private releases only
	Aggregate                        // cross-tenant aggregates, at least k tenants a cell
	TenantSummary                    // per-tenant summaries, no per-user rows
	EventLevel                       // event-level rows, pseudonymous users

	numGranularities = 5
)

var granularityNames = [numGranularities]string{"none", "dp_only", "aggregate", "tenant_summary", "event"}

// String returns the granularity id used in the policy file.
func (g Granularity) String() string {
	if g < numGranularities {
		return granularityNames[g]
	}
	return fmt.Sprintf("granularity(%d)", uint8(g))
}

// ParseGranularity returns the granularity with id s.
func ParseGranularity(s string) (Granularity, error) {
	for i, n := range granularityNames {
		if n == s {
			return Granularity(i), nil
		}
	}
	return 0, fmt.Errorf("%w: granularity %q (known: %s)", ErrUnknown, s, strings.Join(granularityNames[:], ", "))
}

// Describe says in a few words what the granularity lets a purpose see.
func (g Granularity) Describe(k int) string {
	switch g {
	case DPOnly:
		return "differentially private releases only"
	case Aggregate:
		return fmt.Sprintf("cross-tenant aggregates, at least %d tenants a cell", k)
	case TenantSummary:
		return "per-tenant summaries, no per-user rows"
	case EventLevel:
		return "event-level rows of one tenant, pseudonymous users"
	}
	return "nothing"
}

// Status is a tenant's contract status (2(5); docs/DESIGN.md §1). The zero Status is
// unknown: a tenant missing from the registry gets no purposes.
type Status uint8

// The contract statuses.
const (
	StatusUnknown Status = iota
	Trial
	Beta
	Contracted
	Terminated

	numStatuses = 5
)

var statusNames = [numStatuses]string{"unknown", "trial", "beta", "contracted", "terminated"}

// Statuses returns the known statuses (not StatusUnknown).
func Statuses() []Status { return []Status{Trial, Beta, Contracted, Terminated} }

// Valid reports whether s is a known status other than StatusUnknown.
func (s Status) Valid() bool { return s >= Trial && s < numStatuses }

// String returns the status id.
func (s Status) String() string {
	if s < numStatuses {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// ParseStatus returns the status with id s ("unknown" is not accepted).
func ParseStatus(s string) (Status, error) {
	for i, n := range statusNames {
		if n == s && Status(i).Valid() {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("%w: status %q (known: trial, beta, contracted, terminated)", ErrUnknown, s)
}

// Condition is a precondition of a purpose that the tagger cannot check from an
// event and its tenant, so the layer that reads the data enforces it.
type Condition uint8

// The conditions.
const (
	NoCondition Condition = iota
	// OpenTicket: only while a support ticket from the tenant is open, and only
	// that tenant's rows (3(1)-1). The query layer checks the ticket.
	OpenTicket
)

// String returns the condition id used in the policy file.
func (c Condition) String() string {
	switch c {
	case NoCondition:
		return "none"
	case OpenTicket:
		return "open_ticket"
	}
	return fmt.Sprintf("condition(%d)", uint8(c))
}

// Policy is one version of the policy. Build it with Parse; a Policy is not
// modified after that and is safe for concurrent use.
type Policy struct {
	Version int
	Title   string
	Enacted time.Time // date the vendor enacted the version (documentation only)
	// RequiresConsent: the version applies to a tenant only once the tenant has
	// consented to it (clause 4: a change that needs consent by law).
	RequiresConsent bool
	K               int // minimum distinct tenants in a cell of an aggregate
	Retention       Retention
	Categories      map[Category]CategoryInfo
	Purposes        map[Purpose]PurposeRule
	Matrix          map[Category]map[Purpose]Granularity
}

// Cell returns the granularity at which purpose p may see category c.
func (p *Policy) Cell(c Category, pur Purpose) Granularity { return p.Matrix[c][pur] }

// Retention says how long data is kept.
type Retention struct {
	AfterContractEnd time.Duration // 2(3): tenant data is deleted this long after contract end
	EventStore       time.Duration // purpose-tagged events
	DLQ              time.Duration // DLQ records (payloads of malformed events)
}

// CategoryInfo describes a category (clause 1).
type CategoryInfo struct {
	Clause        string
	Description   string
	DescriptionJA string
}

// PurposeRule is what the policy says about one purpose.
type PurposeRule struct {
	Clause      string
	Title       string
	TitleJA     string
	Description string
	Statuses    []Status // contract statuses the purpose applies to; never Terminated
	// Consent: the purpose applies to a tenant only with the tenant's recorded
	// consent to this purpose under the policy version that applies (3(2)-1).
	Consent   bool
	Condition Condition
	Budget    *Budget // privacy budget for dp_only cells; nil when the purpose has none
}

// Applies reports whether the rule lets the purpose serve tenants of status s.
func (r PurposeRule) Applies(s Status) bool {
	for _, x := range r.Statuses {
		if x == s {
			return true
		}
	}
	return false
}

// Budget is the default privacy budget of a purpose's DP releases.
type Budget struct {
	EpsilonPerMonth float64
	DeltaPerMonth   float64
}
