package query

import (
	"context"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/query/breakglass"
	"github.com/shukei/shukei/registry"
)

// Column is one column of a report's rows.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"` // string, integer, number, time, date
	Doc  string `json:"doc"`
}

// Chart tells the web page how to draw a report: a bar per Label, its length Value, one
// colour per Series, and error bars from Low to High when given.
type Chart struct {
	Kind   string `json:"kind"` // bar, table
	Label  string `json:"label,omitempty"`
	Value  string `json:"value,omitempty"`
	Series string `json:"series,omitempty"`
	Low    string `json:"low,omitempty"`
	High   string `json:"high,omitempty"`
}

// Report is one named, parameterised report. It serves exactly one purpose and reads only that
// purpose's database, through that purpose's read-only ClickHouse user.
type Report struct {
	Name        string
	Purpose     string
	Title       string
	Description string
	Params      []Param
	Columns     []Column
	// Threshold: the rows are aggregates across tenants, built by build from sealed atoms of
	// at least k distinct tenants each (gate.Read, through gated in reports.go).
	Threshold bool
	Chart     Chart

	// authorize checks what the grant alone cannot (support: an open ticket for the tenant).
	authorize func(ctx context.Context, e *Env, a Args) error
	run       func(ctx context.Context, e *Env, a Args) ([][]any, error)
	// weeks and build make an aggregate report: the weeks it reads (Mondays, both included)
	// and its rows from their atoms alone.
	weeks func(a Args) (from, to time.Time)
	build func(a Args, at gate.Atoms) ([][]any, error)
}

// Env is what a report runs with.
type Env struct {
	Conn       driver.Conn // the purpose's reader
	DB         string      // the purpose's database
	Prefix     string      // the internal database name (purpose databases are <Prefix>_<purpose>)
	Cluster    string      // clickhouse.cluster, or empty on one server
	K          int
	MaxRows    int
	Now        time.Time
	Tickets    TicketSource
	Lookback   time.Duration
	Budget     ledger.Budget // external_aggregate's monthly allowance
	YearBudget ledger.Budget // and over any 365 days of windows
	BreakGlass BreakGlassSource
	Principal  string // who asks
	ticketID   string // set by authorize for the audit record (a ticket or break-glass id)
}

// TicketSource is the registry as the reports read it: a tenant's support ticket, and every
// tenant with its current contract status (the per-tenant reports).
type TicketSource interface {
	Ticket(ctx context.Context, tenant, id string) (registry.Ticket, error)
	List(ctx context.Context) ([]registry.Tenant, error)
}

// BreakGlassSource checks a break-glass grant (query/breakglass).
type BreakGlassSource interface {
	Check(ctx context.Context, id, principal, tenant string, t time.Time) (breakglass.Grant, error)
}

// Forbidden is a refusal that depends on the request (no open ticket, a trace outside the
// ticket's window): 403 with its text.
type Forbidden struct{ Msg string }

func (e *Forbidden) Error() string { return e.Msg }

// Mart names a purpose mart of the report's database as the report reads it: on a cluster
// through its Distributed table, every shard's tenants (databases.Across).
func (e *Env) Mart(table string) string { return databases.Across(e.Cluster, e.DB+"."+table) }
