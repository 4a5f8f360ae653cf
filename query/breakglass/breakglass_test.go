package breakglass

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/query/principal"
)

const justification = "Written inquiry from the prefectural police, ref. 2026-1129-7, about account takeover"

type env struct {
	conn       driver.Conn
	db         string
	principals *principal.Store
	log        *audit.Log
	s          *Store
}

// newEnv migrates a database of the test's own and registers principals of every kind.
func newEnv(t *testing.T) *env {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	e := &env{conn: conn, db: db, principals: principal.New(conn, db), log: audit.New(conn, db)}
	e.s = New(conn, db, e.principals, e.log)
	approver := []string{principal.RoleBreakGlassApprover}
	for _, p := range []principal.Principal{
		{ID: "hana", Kind: principal.Employee, Purposes: []string{"support"}},
		{ID: "aff", Kind: principal.Affiliate, Purposes: []string{"support", "service_improvement"}},
		{ID: "dpo", Kind: principal.Employee, Purposes: []string{"service_improvement"}, Roles: approver},
		{ID: "dpo2", Kind: principal.Employee, Purposes: []string{"service_improvement"}, Roles: approver},
		{ID: "aff-approver", Kind: principal.Affiliate, Purposes: []string{"service_improvement"}, Roles: approver},
		{ID: "lapsed-approver", Kind: principal.Employee, Purposes: []string{"support"}, Roles: approver, Expires: time.Now().Add(-time.Hour)},
		{ID: "off-approver", Kind: principal.Employee, Purposes: []string{"support"}, Roles: approver, Disabled: true},
		{ID: "lapsed", Kind: principal.Employee, Purposes: []string{"support"}, Expires: time.Now().Add(-time.Hour)},
		{ID: "pm", Kind: principal.Employee, Purposes: []string{"service_improvement", "marketing"}},
		{ID: "agency", Kind: principal.Contractor, Purposes: []string{"marketing"}, ContractRef: "C-1", Expires: time.Now().Add(24 * time.Hour)},
		{ID: "partner", Kind: principal.Partner, Purposes: []string{"external_aggregate"}},
	} {
		if _, err := e.principals.Add(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) request(t *testing.T, who, tenant string) Grant {
	t.Helper()
	g, err := e.s.Request(context.Background(), who, tenant, "3(2)-7", justification, 4*time.Hour)
	if err != nil {
		t.Fatalf("request by %s: %v", who, err)
	}
	return g
}

func TestFold(t *testing.T) {
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	req := action{grant: "g", seq: 10, kind: actRequest, principal: "hana", at: at, tenant: "acme", purpose: "support", clause: "3(2)-7", ttl: 3600}
	approve := func(seq uint64, by string, d time.Duration) action {
		return action{grant: "g", seq: seq, kind: actApprove, principal: by, at: at.Add(d)}
	}
	revoke := func(seq uint64, by string, d time.Duration) action {
		return action{grant: "g", seq: seq, kind: actRevoke, principal: by, at: at.Add(d)}
	}
	for _, c := range []struct {
		name     string
		acts     []action
		state    string // at at+10m
		approved string
	}{
		{"requested", []action{req}, "pending", ""},
		{"approved", []action{req, approve(11, "dpo", time.Minute)}, "open", "dpo"},
		{"the first approval sets the time box", []action{approve(12, "dpo2", 2*time.Minute), req, approve(11, "dpo", time.Minute)}, "open", "dpo"},
		{"revoked after approval", []action{req, approve(11, "dpo", time.Minute), revoke(12, "hana", 2*time.Minute)}, "revoked", "dpo"},
		{"an approval after a revocation does not open it", []action{req, revoke(11, "hana", time.Minute), approve(12, "dpo", time.Minute)}, "revoked", ""},
		// Both in the same second, stored in either order: the sequence decides, and a
		// revocation is final either way.
		{"same second, revoke first", []action{req, approve(12, "dpo", time.Minute), revoke(11, "hana", time.Minute)}, "revoked", ""},
		{"same second, approve first", []action{req, revoke(12, "hana", time.Minute), approve(11, "dpo", time.Minute)}, "revoked", "dpo"},
		{"revocation carried over from the old table", []action{req, approve(11, "dpo", time.Minute), {grant: "g", seq: 12, kind: actRevoke, at: at.Add(time.Minute)}}, "revoked", "dpo"},
		{"expired", []action{req, approve(11, "dpo", -time.Hour)}, "expired", "dpo"},
	} {
		g, ok := fold(c.acts)
		if !ok || g.ID != "g" || g.Principal != "hana" || g.Tenant != "acme" || g.TTL != time.Hour {
			t.Errorf("%s: fold = %+v, %v", c.name, g, ok)
			continue
		}
		if st := g.State(at.Add(10 * time.Minute)); st != c.state || g.ApprovedBy != c.approved {
			t.Errorf("%s: state %s approved by %q; want %s, %q", c.name, st, g.ApprovedBy, c.state, c.approved)
		}
		if g.ApprovedBy != "" && !g.ExpiresAt.Equal(g.ApprovedAt.Add(time.Hour)) {
			t.Errorf("%s: time box %s..%s", c.name, g.ApprovedAt, g.ExpiresAt)
		}
	}
	if _, ok := fold([]action{approve(11, "dpo", 0)}); ok {
		t.Error("a grant without a request was folded")
	}
}

// Who may do what (docs/promises.md 11), against the real store.
func TestWhoMayDoWhat(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// Request: an enabled, unexpired employee or affiliate whose grant names support.
	for who, want := range map[string]error{
		"partner": ErrNotAllowed, "agency": ErrNotAllowed, "pm": ErrNotAllowed, "lapsed": ErrNotAllowed,
		"off-approver": ErrNotAllowed, "nobody": ErrNotAllowed, "dpo": ErrNotAllowed,
	} {
		if _, err := e.s.Request(ctx, who, "acme", "3(2)-7", justification, time.Hour); !errors.Is(err, want) {
			t.Errorf("request by %s: %v, want %v", who, err, want)
		}
	}
	if _, err := e.s.Request(ctx, "lapsed", "acme", "3(2)-7", justification, time.Hour); !errors.Is(err, principal.ErrExpired) {
		t.Errorf("request by an expired principal names the expiry: %v", err)
	}
	g := e.request(t, "hana", "acme")
	ga := e.request(t, "aff", "beta-co")

	// Approve: another enabled, unexpired employee or affiliate holding the approver grant.
	if _, err := e.s.Approve(ctx, g.ID, "hana"); !errors.Is(err, ErrSelfApprove) {
		t.Errorf("self-approval: %v", err)
	}
	for _, who := range []string{"aff", "pm", "agency", "partner", "lapsed-approver", "off-approver", "nobody"} {
		if _, err := e.s.Approve(ctx, g.ID, who); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("approval by %s: %v", who, err)
		}
	}
	if _, err := e.s.Approve(ctx, "bg-none", "dpo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("approval of no grant: %v", err)
	}
	if got, _ := e.s.Get(ctx, g.ID); got.State(time.Now()) != "pending" {
		t.Fatalf("refused approvals changed the grant: %+v", got)
	}
	g, err := e.s.Approve(ctx, g.ID, "aff-approver")
	if err != nil || g.State(time.Now()) != "open" || g.ApprovedBy != "aff-approver" {
		t.Fatalf("approval by an affiliate approver: %+v %v", g, err)
	}
	if _, err := e.s.Approve(ctx, g.ID, "dpo"); !errors.Is(err, ErrNotOpen) {
		t.Errorf("second approval: %v", err)
	}
	if _, err := e.s.Approve(ctx, ga.ID, "dpo"); err != nil {
		t.Fatal(err)
	}

	// Revoke: the requester, the grant's approver, or an approver-grant holder; nobody else.
	for _, who := range []string{"pm", "partner", "agency", "aff", "lapsed-approver", "off-approver", "nobody"} {
		if _, err := e.s.Revoke(ctx, g.ID, who); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("revocation by %s: %v", who, err)
		}
	}
	if got, _ := e.s.Check(ctx, g.ID, "hana", "acme", time.Now()); got.State(time.Now()) != "open" {
		t.Fatalf("refused revocations closed the grant: %+v", got)
	}
	// The approver keeps the right to revoke what it approved after losing the approver grant.
	if _, err := e.principals.Update(ctx, "aff-approver", func(p *principal.Principal) error { p.Roles = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if g, err = e.s.Revoke(ctx, g.ID, "aff-approver"); err != nil || g.State(time.Now()) != "revoked" || g.RevokedBy != "aff-approver" {
		t.Fatalf("revocation by the grant's approver: %+v %v", g, err)
	}
	if _, err := e.s.Revoke(ctx, g.ID, "hana"); !errors.Is(err, ErrNotOpen) {
		t.Errorf("revoking twice: %v", err)
	}
	// The requester withdraws its own; another approver-grant holder revokes any.
	mine := e.request(t, "hana", "acme")
	if g, err := e.s.Revoke(ctx, mine.ID, "hana"); err != nil || g.State(time.Now()) != "revoked" {
		t.Errorf("the requester's revocation: %+v %v", g, err)
	}
	if g, err := e.s.Revoke(ctx, ga.ID, "dpo2"); err != nil || g.State(time.Now()) != "revoked" {
		t.Errorf("an approver's revocation: %+v %v", g, err)
	}

	// Every allowed step is in the audit log with the grant and its tenant.
	var n uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM "+e.db+"_audit.audit_log WHERE ticket = ? AND tenant_id = 'acme'", g.ID).Scan(&n); err != nil || n != 3 {
		t.Errorf("audit records of %s with its tenant: %d %v", g.ID, n, err)
	}
	if _, err := e.log.Verify(ctx); err != nil {
		t.Error(err)
	}
}

// Using a grant needs its requester to qualify still: enabled, unexpired, employee or
// affiliate, support granted.
func TestCheckRequesterStillQualifies(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.request(t, "hana", "acme")
	if _, err := e.s.Approve(ctx, g.ID, "dpo"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := e.s.Check(ctx, g.ID, "hana", "acme", now); err != nil {
		t.Fatalf("open grant refused: %v", err)
	}
	if _, err := e.s.Check(ctx, g.ID, "aff", "acme", now); !errors.Is(err, ErrNotOpen) {
		t.Errorf("another principal: %v", err)
	}
	if _, err := e.s.Check(ctx, g.ID, "hana", "beta-co", now); !errors.Is(err, ErrNotOpen) {
		t.Errorf("another tenant: %v", err)
	}
	for _, c := range []struct {
		name   string
		change func(*principal.Principal)
	}{
		{"support taken away", func(p *principal.Principal) { p.Purposes = []string{"service_improvement"} }},
		{"disabled", func(p *principal.Principal) { p.Disabled = true }},
		{"grant expired", func(p *principal.Principal) { p.Expires = time.Now().Add(-time.Minute) }},
	} {
		before, err := e.principals.Get(ctx, "hana")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.principals.Update(ctx, "hana", func(p *principal.Principal) error { c.change(p); return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.Check(ctx, g.ID, "hana", "acme", time.Now()); !errors.Is(err, ErrNotOpen) || !strings.Contains(err.Error(), "no longer qualifies") {
			t.Errorf("%s: Check = %v", c.name, err)
		}
		if _, err := e.principals.Update(ctx, "hana", func(p *principal.Principal) error {
			p.Purposes, p.Disabled, p.Expires = before.Purposes, before.Disabled, before.Expires
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.Check(ctx, g.ID, "hana", "acme", time.Now()); err != nil {
			t.Errorf("%s, then restored: %v", c.name, err)
		}
	}
	// A grant with an expiry later than the requester's: refused from the requester's expiry on.
	end := time.Now().Add(time.Hour).Truncate(time.Second)
	if _, err := e.principals.Update(ctx, "hana", func(p *principal.Principal) error { p.Expires = end; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Check(ctx, g.ID, "hana", "acme", end.Add(-time.Second)); err != nil {
		t.Errorf("before the requester's expiry: %v", err)
	}
	if _, err := e.s.Check(ctx, g.ID, "hana", "acme", end); !errors.Is(err, ErrNotOpen) {
		t.Errorf("at the requester's expiry: %v", err)
	}
}

// Approvals and revocations racing, many rounds: after a revocation the grant is never open,
// whatever order (and second) the actions landed in, and an approval after it is refused.
func TestConcurrentApproveAndRevoke(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const rounds = 30
	approvedBeforeRevoke, approvedAfterRevoke, approveRefused := 0, 0, 0
	for round := range rounds {
		g := e.request(t, "hana", "acme")
		if round%3 == 1 { // some rounds start open: revoke races a second approval
			if _, err := e.s.Approve(ctx, g.ID, "dpo2"); err != nil {
				t.Fatal(err)
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := map[string]error{}
		var mu sync.Mutex
		for _, step := range []struct{ name, who string }{{"approve", "dpo"}, {"approve", "aff-approver"}, {"revoke", "hana"}, {"revoke", "dpo2"}} {
			wg.Go(func() {
				<-start
				var err error
				if step.name == "approve" {
					_, err = e.s.Approve(ctx, g.ID, step.who)
				} else {
					_, err = e.s.Revoke(ctx, g.ID, step.who)
				}
				mu.Lock()
				errs[step.name+"/"+step.who] = err
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		for k, err := range errs {
			if err != nil && !errors.Is(err, ErrNotOpen) {
				t.Fatalf("round %d: %s: %v", round, k, err)
			}
		}
		if errs["revoke/hana"] != nil && errs["revoke/dpo2"] != nil {
			t.Fatalf("round %d: neither revocation was taken: %v", round, errs)
		}
		now := time.Now()
		got, err := e.s.Get(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st := got.State(now); st != "revoked" {
			t.Fatalf("round %d: after a revocation the grant is %s (%+v, %v)", round, st, got, errs)
		}
		if _, err := e.s.Check(ctx, g.ID, "hana", "acme", now); !errors.Is(err, ErrNotOpen) {
			t.Fatalf("round %d: a revoked grant let its requester read: %v", round, err)
		}
		// An approval arriving after the revocation is refused and changes nothing.
		if _, err := e.s.Approve(ctx, g.ID, "dpo"); !errors.Is(err, ErrNotOpen) {
			t.Fatalf("round %d: approval after the revocation: %v", round, err)
		}
		// How the actions landed, for the log: an approval may be sequenced after a revocation
		// (its check ran before the revocation was stored); the grant stays revoked all the same.
		var firstRevoke, lastApprove uint64
		if err := e.conn.QueryRow(ctx, "SELECT minIf(seq, action = 'revoke'), maxIf(seq, action = 'approve') FROM "+e.db+"_breakglass.breakglass_actions WHERE grant_id = ?", g.ID).Scan(&firstRevoke, &lastApprove); err != nil {
			t.Fatal(err)
		}
		switch {
		case lastApprove == 0:
			approveRefused++
		case lastApprove > firstRevoke:
			approvedAfterRevoke++
		default:
			approvedBeforeRevoke++
		}
	}
	t.Logf("%d rounds: approval sequenced before the revocation %d, after it %d, no approval stored %d",
		rounds, approvedBeforeRevoke, approvedAfterRevoke, approveRefused)
	if _, err := e.log.Verify(ctx); err != nil {
		t.Error(err)
	}
}

// The interleaving the old table got wrong, forced: an approval that passed its check before
// a revocation is stored after it, in the same second. The grant stays revoked.
func TestApprovalStoredAfterRevocationNeverOpens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.request(t, "hana", "acme")
	if _, err := e.s.Revoke(ctx, g.ID, "hana"); err != nil {
		t.Fatal(err)
	}
	now := e.s.now()
	rec, err := e.log.Append(ctx, audit.Record{Principal: "dpo", Kind: "employee", Purpose: "support", Ticket: g.ID, Tenant: "acme", Report: "breakglass_approve", Decision: "approved"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.put(ctx, action{grant: g.ID, seq: rec.Seq, kind: actApprove, principal: "dpo", at: now, tenant: "acme", purpose: "support"}); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.Get(ctx, g.ID)
	if err != nil || got.State(now) != "revoked" || got.ApprovedBy != "" {
		t.Fatalf("after a late approval: %+v %v", got, err)
	}
	if _, err := e.s.Check(ctx, g.ID, "hana", "acme", now); !errors.Is(err, ErrNotOpen) {
		t.Errorf("Check: %v", err)
	}
}

func TestJustificationMustBePrintable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, j := range []string{
		justification + "\x1b[1A\x1b[2K",               // moves up and erases the line before
		"\u202e" + justification,                       // right-to-left override
		justification + "\nbg-0000 hana acme approved", // a line that looks like another grant
		justification + "\t\t",
		justification + "\x00",
	} {
		if _, err := e.s.Request(ctx, "hana", "acme", "3(2)-7", j, time.Hour); !errors.Is(err, ErrInvalid) {
			t.Errorf("justification %q: %v", j, err)
		}
	}
	g, err := e.s.Request(ctx, "hana", "acme", "3(2)-6", "  顧客の生命・身体の保護のため (ticket T-99), plain spaces are fine  ", time.Hour)
	if err != nil || g.Justification != "顧客の生命・身体の保護のため (ticket T-99), plain spaces are fine" {
		t.Fatalf("printable justification: %+v %v", g, err)
	}
	gs, err := e.s.List(ctx)
	if err != nil || len(gs) != 1 || gs[0].Justification != g.Justification {
		t.Errorf("List = %+v, %v", gs, err)
	}
}

// Grants made before the action log keep their state: the migration turns each row of the old
// table into its actions, once, however often it runs.
func TestMigrationCarriesOldGrants(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	zero := time.Unix(0, 0).UTC()
	b, err := e.conn.PrepareBatch(ctx, "INSERT INTO "+e.db+"_breakglass.breakglass (id, principal_id, purpose, tenant_id, clause, justification, ttl_seconds, requested_at, approved_by, approved_at, expires_at, revoked_at, updated_at)")
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id                         string
		approvedBy                 string
		approved, revoked, updated time.Time
	}
	for _, r := range []row{
		{"bg-pending", "", zero, zero, now.Add(-time.Hour)},
		{"bg-open", "dpo", now.Add(-time.Hour), zero, now.Add(-time.Hour)},
		{"bg-expired", "dpo", now.Add(-5 * time.Hour), zero, now.Add(-5 * time.Hour)},
		{"bg-revoked", "dpo", now.Add(-time.Hour), now.Add(-30 * time.Minute), now.Add(-30 * time.Minute)},
		{"bg-withdrawn", "", zero, now.Add(-30 * time.Minute), now.Add(-30 * time.Minute)},
		// An older version of bg-revoked: FINAL keeps only the newest.
		{"bg-revoked", "dpo", now.Add(-time.Hour), zero, now.Add(-time.Hour)},
	} {
		exp := zero
		if r.approved != zero {
			exp = r.approved.Add(4 * time.Hour)
		}
		if err := b.Append(r.id, "hana", "support", "acme", "3(2)-7", justification, uint32(4*3600), now.Add(-6*time.Hour),
			r.approvedBy, r.approved, exp, r.revoked, r.updated); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	migs, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for _, m := range migs {
		if m.Version == 14 {
			for _, s := range m.Statements(e.db) {
				if strings.HasPrefix(s, "INSERT") {
					// Its tables have moved to the audit database since (0016).
					stmts = append(stmts, strings.ReplaceAll(s, e.db+".breakglass", e.db+"_breakglass.breakglass"))
				}
			}
		}
	}
	if len(stmts) != 3 {
		t.Fatalf("0014 has %d inserts", len(stmts))
	}
	for run := range 2 { // a migration cut short runs again: nothing is copied twice
		for _, s := range stmts {
			if err := e.conn.Exec(ctx, s); err != nil {
				t.Fatalf("run %d: %v", run, err)
			}
		}
	}
	var n uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM "+e.db+"_breakglass.breakglass_actions").Scan(&n); err != nil || n != 5+3+2 {
		t.Errorf("actions after two runs: %d %v; want 10", n, err)
	}
	want := map[string]string{"bg-pending": "pending", "bg-open": "open", "bg-expired": "expired", "bg-revoked": "revoked", "bg-withdrawn": "revoked"}
	gs, err := e.s.List(ctx)
	if err != nil || len(gs) != len(want) {
		t.Fatalf("List = %+v, %v", gs, err)
	}
	for _, g := range gs {
		if st := g.State(now); st != want[g.ID] || g.Justification != justification || g.Tenant != "acme" || g.TTL != 4*time.Hour {
			t.Errorf("%s: %s, want %s (%+v)", g.ID, st, want[g.ID], g)
		}
		if g.ID == "bg-open" && (!g.ApprovedAt.Equal(now.Add(-time.Hour)) || !g.ExpiresAt.Equal(now.Add(3*time.Hour)) || g.ApprovedBy != "dpo") {
			t.Errorf("bg-open's time box: %+v", g)
		}
	}
	// They go on under the new rules.
	if _, err := e.s.Check(ctx, "bg-open", "hana", "acme", now); err != nil {
		t.Errorf("the open grant carried over: %v", err)
	}
	if g, err := e.s.Revoke(ctx, "bg-open", "dpo"); err != nil || g.State(now) != "revoked" {
		t.Errorf("revoking a carried-over grant: %+v %v", g, err)
	}
	if g, err := e.s.Approve(ctx, "bg-pending", "dpo"); err != nil || g.State(time.Now()) != "open" {
		t.Errorf("approving a carried-over request: %+v %v", g, err)
	}
	if _, err := e.s.Approve(ctx, "bg-withdrawn", "dpo"); !errors.Is(err, ErrNotOpen) {
		t.Errorf("approving a carried-over revoked request: %v", err)
	}
}

func ExampleGrant_State() {
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	g := Grant{ApprovedAt: at, ExpiresAt: at.Add(time.Hour)}
	fmt.Println(g.State(at.Add(time.Minute)), g.State(at.Add(time.Hour)))
	// Output: open expired
}

// ListTo, 'shukei breakglass': every grant as WriteList writes it.
func TestListTo(t *testing.T) {
	e := newEnv(t)
	e.request(t, "hana", "acme")
	ctx, now := context.Background(), time.Now()
	gs, err := e.s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got, want strings.Builder
	if err := e.s.ListTo(ctx, &got, now); err != nil {
		t.Fatal(err)
	}
	if err := WriteList(&want, gs, now); err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || got.String() != want.String() {
		t.Errorf("got\n%s\nwant\n%s", got.String(), want.String())
	}
}
