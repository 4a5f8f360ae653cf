package principal

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Principal
		ok   bool
	}{
		{"employee", Principal{ID: "hana", Kind: Employee, Purposes: []string{"service_improvement", "marketing"}}, true},
		{"contractor with contract and expiry", Principal{ID: "acme-research", Kind: Contractor, Purposes: []string{"interview_selection"}, ContractRef: "C-2026-7", Expires: time.Now().Add(time.Hour)}, true},
		{"contractor without contract", Principal{ID: "x", Kind: Contractor, Purposes: []string{"marketing"}, Expires: time.Now().Add(time.Hour)}, false},
		{"contractor without expiry", Principal{ID: "x", Kind: Contractor, Purposes: []string{"marketing"}, ContractRef: "C"}, false},
		{"partner with an internal purpose", Principal{ID: "x", Kind: Partner, Purposes: []string{"marketing"}}, false},
		{"partner with external_aggregate", Principal{ID: "x", Kind: Partner, Purposes: []string{"external_aggregate"}}, true},
		{"unknown purpose", Principal{ID: "x", Kind: Employee, Purposes: []string{"sales"}}, false},
		{"no purpose", Principal{ID: "x", Kind: Employee}, false},
		{"unknown kind", Principal{ID: "x", Kind: "intern", Purposes: []string{"marketing"}}, false},
		{"bad id", Principal{ID: "Hana Sato", Kind: Employee, Purposes: []string{"marketing"}}, false},
		{"employee approver", Principal{ID: "dpo", Kind: Employee, Purposes: []string{"support"}, Roles: []string{RoleBreakGlassApprover}}, true},
		{"affiliate approver", Principal{ID: "aff", Kind: Affiliate, Purposes: []string{"support"}, Roles: []string{RoleBreakGlassApprover}}, true},
		{"contractor approver", Principal{ID: "x", Kind: Contractor, Purposes: []string{"marketing"}, ContractRef: "C", Expires: time.Now().Add(time.Hour), Roles: []string{RoleBreakGlassApprover}}, false},
		{"partner approver", Principal{ID: "x", Kind: Partner, Purposes: []string{"external_aggregate"}, Roles: []string{RoleBreakGlassApprover}}, false},
		{"unknown role", Principal{ID: "x", Kind: Employee, Purposes: []string{"marketing"}, Roles: []string{"admin"}}, false},
	} {
		err := c.p.Validate()
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestStoreAuthenticateAuthorize(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	s := New(conn, cfg.ClickHouse.Database)
	tok, err := s.Add(ctx, Principal{ID: "hana", Kind: Employee, Purposes: []string{"service_improvement"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, Principal{ID: "hana", Kind: Employee, Purposes: []string{"marketing"}}); !errors.Is(err, ErrExists) {
		t.Errorf("second add: %v", err)
	}
	ctok, err := s.Add(ctx, Principal{ID: "acme-research", Kind: Contractor, Purposes: []string{"interview_selection"}, ContractRef: "C-2026-7", Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, tok)
	if err != nil || p.ID != "hana" {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "shq_wrong", tok + "x"} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, ErrUnknownToken) {
			t.Errorf("Authenticate(%q) = %v", bad, err)
		}
	}
	now := time.Now()
	if err := p.Authorize("service_improvement", now); err != nil {
		t.Errorf("granted purpose refused: %v", err)
	}
	if err := p.Authorize("marketing", now); !errors.Is(err, ErrNotGranted) {
		t.Errorf("ungranted purpose: %v", err)
	}
	c, err := s.Authenticate(ctx, ctok)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Authorize("interview_selection", now); !errors.Is(err, ErrExpired) {
		t.Errorf("expired contractor: %v", err)
	}
	if _, err := s.Update(ctx, "hana", func(p *Principal) error { p.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Authenticate(ctx, tok)
	if err := p.Authorize("service_improvement", now); !errors.Is(err, ErrDisabled) {
		t.Errorf("disabled principal: %v", err)
	}
	if for_, err := s.List(ctx); err != nil || len(for_) != 2 {
		t.Errorf("List = %d, %v", len(for_), err)
	}
	// The token itself is stored nowhere.
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+cfg.ClickHouse.Database+"_principals.principals WHERE has(token_hashes, ?)", tok).Scan(&n); err != nil || n != 0 {
		t.Errorf("the token is stored in clear (%d rows, %v)", n, err)
	}
}

// Active is what every request checks first: enabled, unexpired, of a known kind.
func TestActive(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		p    Principal
		want error
	}{
		{"employee", Principal{ID: "a", Kind: Employee}, nil},
		{"unexpired contractor", Principal{ID: "a", Kind: Contractor, Expires: now.Add(time.Second)}, nil},
		{"disabled", Principal{ID: "a", Kind: Employee, Disabled: true}, ErrDisabled},
		{"expired now", Principal{ID: "a", Kind: Contractor, Expires: now}, ErrExpired},
		{"expired employee", Principal{ID: "a", Kind: Employee, Expires: now.Add(-time.Hour)}, ErrExpired},
		{"unknown kind", Principal{ID: "a", Kind: "intern"}, ErrUnknownKind},
		{"no kind", Principal{ID: "a"}, ErrUnknownKind},
	} {
		err := c.p.Active(now)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: Active = %v, want %v", c.name, err, c.want)
		}
		// Authorize checks the same before the purpose.
		if aerr := c.p.Authorize("marketing", now); c.want != nil && !errors.Is(aerr, c.want) {
			t.Errorf("%s: Authorize = %v, want %v", c.name, aerr, c.want)
		}
	}
}

func TestStoreKeepsRoles(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	s := New(conn, cfg.ClickHouse.Database)
	if _, err := s.Add(ctx, Principal{ID: "dpo", Kind: Employee, Purposes: []string{"support"}, Roles: []string{RoleBreakGlassApprover}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, Principal{ID: "hana", Kind: Employee, Purposes: []string{"support"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, Principal{ID: "agency", Kind: Contractor, Purposes: []string{"marketing"}, ContractRef: "C-1",
		Expires: time.Now().Add(time.Hour), Roles: []string{RoleBreakGlassApprover}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a contractor approver was stored: %v", err)
	}
	p, err := s.Get(ctx, "dpo")
	if err != nil || !p.HasRole(RoleBreakGlassApprover) || len(p.Roles) != 1 {
		t.Fatalf("dpo = %+v, %v", p, err)
	}
	if p, _ := s.Get(ctx, "hana"); p.HasRole(RoleBreakGlassApprover) || p.Roles != nil {
		t.Errorf("hana holds roles %v", p.Roles)
	}
	// Updating something else keeps the role; a role can be taken away.
	if p, err := s.Update(ctx, "dpo", func(p *Principal) error { p.Purposes = append(p.Purposes, "marketing"); return nil }); err != nil || !p.HasRole(RoleBreakGlassApprover) {
		t.Fatalf("update: %+v %v", p, err)
	}
	if _, err := s.Update(ctx, "dpo", func(p *Principal) error { p.Roles = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Get(ctx, "dpo"); p.HasRole(RoleBreakGlassApprover) {
		t.Errorf("the role was not taken away: %v", p.Roles)
	}
}

// ListTo and DisableTo, 'shukei principals list' and 'disable': the table of grants, and a
// principal disabled with a line saying so; an unknown one is an error.
func TestListToDisableTo(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	s := New(conn, cfg.ClickHouse.Database)
	if _, err := s.Add(ctx, Principal{ID: "hana", Kind: Employee, Purposes: []string{"service_improvement"}}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := s.DisableTo(ctx, &b, "hana"); err != nil || b.String() != "disabled hana\n" {
		t.Errorf("disable: %q %v", b.String(), err)
	}
	if err := s.DisableTo(ctx, &b, "nobody"); err == nil {
		t.Error("an unknown principal was disabled")
	}
	ps, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got, want strings.Builder
	if err := s.ListTo(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if err := WriteList(&want, ps); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() || len(ps) != 1 || !ps[0].Disabled {
		t.Errorf("list: %+v\n%s", ps, got.String())
	}
}
