package registry_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/registry"
)

func TestRegistryOnRealServer(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	reg := registry.New(conn, db, master)

	tok, err := reg.Add(ctx, registry.Tenant{ID: "acme", Status: registry.StatusTrial, Edition: "standard", SizeBand: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Add(ctx, registry.Tenant{ID: "acme", Status: registry.StatusTrial, Edition: "standard", SizeBand: "s"}); !errors.Is(err, registry.ErrExists) {
		t.Errorf("second Add: %v, want ErrExists", err)
	}
	if _, err := reg.Add(ctx, registry.Tenant{ID: "Bad Id", Status: "gold", Edition: "x", SizeBand: "s"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("invalid tenant: %v", err)
	}
	if _, err := reg.Update(ctx, "acme", func(t *registry.Tenant) error {
		t.Status = registry.StatusContracted
		t.ContractEnd = time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	if err := reg.Consent(ctx, "acme", "external_consented", 1, true, at); err != nil {
		t.Fatal(err)
	}
	if err := reg.Consent(ctx, "nobody", "external_consented", 1, true, at); !errors.Is(err, registry.ErrUnknownTenant) {
		t.Errorf("consent of unknown tenant: %v", err)
	}
	tok2, err := reg.AddToken(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}

	got, err := reg.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != registry.StatusContracted || got.Edition != "standard" || !got.ContractEnd.Equal(time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("tenant %+v", got)
	}
	if len(got.TokenHashes) != 2 || got.TokenHashes[0] != registry.TokenHash(tok) || got.TokenHashes[1] != registry.TokenHash(tok2) {
		t.Errorf("token hashes %v", got.TokenHashes)
	}
	if c, ok := got.ConsentedAt("external_consented", 1); !ok || !c.Equal(at) {
		t.Errorf("consent %v %v", c, ok)
	}
	if err := reg.Consent(ctx, "acme", "external_consented", 1, false, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = reg.Get(ctx, "acme")
	if _, ok := got.ConsentedAt("external_consented", 1); ok {
		t.Error("a withdrawn consent still counts")
	}

	// The cache sees the registry and installs the tenant's root in the keyring.
	keyring := pseudonym.NewKeyring(master)
	cache := registry.NewCache(reg, keyring, 100*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	snap := cache.Snapshot()
	if id, ok := snap.TenantOfToken(registry.TokenHash(tok2)); !ok || id != "acme" {
		t.Errorf("token lookup: %q %v", id, ok)
	}
	if _, err := keyring.Pseudonymize("acme", time.Now(), "u-1"); err != nil {
		t.Errorf("keyring: %v", err)
	}
	// A change is seen within the refresh interval.
	runCtx, stop := context.WithCancel(ctx)
	go func() { _ = cache.Run(runCtx) }()
	defer stop()
	if _, err := reg.Add(ctx, registry.Tenant{ID: "globex", Status: registry.StatusBeta, Edition: "enterprise", SizeBand: "l"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := cache.Snapshot().Lookup("globex"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache did not see a new tenant within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Crypto-shredding: once the root is destroyed the cache forgets the key, and no
	// pseudonym of the tenant can be made again.
	if err := reg.DestroyKeys(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.Pseudonymize("acme", time.Now(), "u-1"); !errors.Is(err, pseudonym.ErrNoRoot) {
		t.Errorf("after DestroyKeys: %v, want ErrNoRoot", err)
	}
	list, err := reg.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "acme" || list[1].ID != "globex" {
		t.Errorf("list %v %v", list, err)
	}
}

// Terminated means silent: every token goes, no new one is issued, and the contract end that
// starts retention is set when none was given.
func TestTerminateRevokesTokensAndSetsContractEnd(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	reg := registry.New(conn, db, master)
	tok1, err := reg.Add(ctx, registry.Tenant{ID: "acme", Status: registry.StatusContracted, Edition: "standard", SizeBand: "s"})
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := reg.AddToken(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tok3, err := reg.AddToken(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	cache := registry.NewCache(reg, nil, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	refresh := func() {
		t.Helper()
		if err := cache.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	}
	refresh()
	for _, tok := range []string{tok1, tok2, tok3} {
		if id, ok := cache.TenantOfToken(registry.TokenHash(tok)); !ok || id != "acme" {
			t.Fatalf("token not accepted before revocation: %q %v", id, ok)
		}
	}

	// One token revoked by value, one by hash; a token the tenant does not hold is an error.
	if n, err := reg.RevokeToken(ctx, "acme", tok1, false); err != nil || n != 1 {
		t.Fatalf("revoke by token: %d %v", n, err)
	}
	if n, err := reg.RevokeToken(ctx, "acme", registry.TokenHash(tok2), false); err != nil || n != 1 {
		t.Fatalf("revoke by hash: %d %v", n, err)
	}
	if _, err := reg.RevokeToken(ctx, "acme", "shk_nothing", false); !errors.Is(err, registry.ErrUnknownToken) {
		t.Errorf("revoking an unknown token: %v", err)
	}
	refresh()
	for tok, want := range map[string]bool{tok1: false, tok2: false, tok3: true} {
		if _, ok := cache.TenantOfToken(registry.TokenHash(tok)); ok != want {
			t.Errorf("after revocation, token accepted=%v want %v", ok, want)
		}
	}

	before := time.Now().UTC().Truncate(time.Second)
	got, err := reg.Update(ctx, "acme", func(x *registry.Tenant) error { x.Status = registry.StatusTerminated; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.TokenHashes) != 0 {
		t.Errorf("terminated tenant keeps %d tokens", len(got.TokenHashes))
	}
	if got.ContractEnd.Before(before) || got.ContractEnd.After(time.Now().Add(time.Second)) {
		t.Errorf("contract end %v, want now (%v)", got.ContractEnd, before)
	}
	refresh()
	if _, ok := cache.TenantOfToken(registry.TokenHash(tok3)); ok {
		t.Error("a terminated tenant's token is still accepted")
	}
	if !cache.Silent("acme") || cache.Silent("nobody") {
		t.Error("Silent does not name exactly the terminated tenant")
	}
	if _, err := reg.AddToken(ctx, "acme"); !errors.Is(err, registry.ErrTerminated) {
		t.Errorf("token issued to a terminated tenant: %v", err)
	}
	// An explicit contract end is kept.
	end := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
	if _, err := reg.Add(ctx, registry.Tenant{ID: "beta", Status: registry.StatusTrial, Edition: "standard", SizeBand: "s"}); err != nil {
		t.Fatal(err)
	}
	got, err = reg.Update(ctx, "beta", func(x *registry.Tenant) error { x.Status, x.ContractEnd = registry.StatusTerminated, end; return nil })
	if err != nil || !got.ContractEnd.Equal(end) {
		t.Errorf("explicit contract end: %v %v", got.ContractEnd, err)
	}
}
