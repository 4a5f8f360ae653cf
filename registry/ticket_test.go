package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/registry"
)

func TestTicketsOpenCloseAndExpire(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	master, _ := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	reg := registry.New(conn, db, master)
	if _, err := reg.Add(ctx, registry.Tenant{ID: "acme", Status: registry.StatusContracted, Edition: "standard", SizeBand: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.OpenTicket(ctx, "nobody", "T-1", time.Hour, "alice"); !errors.Is(err, registry.ErrUnknownTenant) {
		t.Errorf("ticket of an unknown tenant: %v", err)
	}
	for _, bad := range []struct {
		id  string
		ttl time.Duration
	}{{"T 1", time.Hour}, {"T-1' OR 1=1", time.Hour}, {"T-1", 0}, {"T-1", registry.MaxTicketTTL + time.Hour}} {
		if _, err := reg.OpenTicket(ctx, "acme", bad.id, bad.ttl, "alice"); !errors.Is(err, registry.ErrInvalidTicket) {
			t.Errorf("OpenTicket(%q, %s): %v, want ErrInvalidTicket", bad.id, bad.ttl, err)
		}
	}

	long, err := reg.OpenTicket(ctx, "acme", "T-1", time.Hour, "alice")
	if err != nil {
		t.Fatal(err)
	}
	short, err := reg.OpenTicket(ctx, "acme", "T-2", 2*time.Second, "alice")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if !long.OpenAt(now) || !short.OpenAt(now) {
		t.Fatalf("fresh tickets not open: %+v %+v", long, short)
	}
	got, err := reg.Ticket(ctx, "acme", "T-1")
	if err != nil || got.ID != "T-1" || got.OpenedBy != "alice" || !got.ExpiresAt.Equal(long.ExpiresAt) || !got.ClosedAt.IsZero() {
		t.Fatalf("Ticket: %+v %v", got, err)
	}
	if _, err := reg.Ticket(ctx, "other", "T-1"); !errors.Is(err, registry.ErrNoTicket) {
		t.Errorf("another tenant's ticket: %v", err)
	}

	// Closing takes effect at once; closing twice says the ticket is not open.
	if _, err := reg.CloseTicket(ctx, "acme", "T-1"); err != nil {
		t.Fatal(err)
	}
	got, _ = reg.Ticket(ctx, "acme", "T-1")
	if got.OpenAt(time.Now().Add(time.Second)) || got.ClosedAt.IsZero() {
		t.Errorf("closed ticket still open: %+v", got)
	}
	if _, err := reg.CloseTicket(ctx, "acme", "T-1"); !errors.Is(err, registry.ErrTicketClosed) {
		t.Errorf("second close: %v", err)
	}

	// The short ticket closes by itself.
	time.Sleep(time.Until(short.ExpiresAt) + 100*time.Millisecond)
	got, _ = reg.Ticket(ctx, "acme", "T-2")
	if got.OpenAt(time.Now()) {
		t.Errorf("expired ticket still open: %+v", got)
	}
	all, err := reg.Tickets(ctx, "acme")
	if err != nil || len(all) != 2 {
		t.Errorf("Tickets: %d %v", len(all), err)
	}
}
