package principal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// Unknown tokens, however many and however concurrent, cost at most one load of the index per
// MinReload; a principal added while the index is in use is found within about MinReload; a
// known token's principal is read as it is now (disabled, re-enabled, its token withdrawn),
// through ClickHouse 18.16's FINAL with a WHERE on the key, over several unmerged parts.
func TestIndexLookupAndCurrentState(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	s := New(conn, db)
	tok, err := s.Add(ctx, Principal{ID: "hana", Kind: Employee, Purposes: []string{"service_improvement"}})
	if err != nil {
		t.Fatal(err)
	}
	x := NewIndex(s, time.Second)
	if err := x.Load(ctx); err != nil {
		t.Fatal(err)
	}
	start := x.Loads()
	began := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if _, err := x.Lookup(ctx, "shq_made_up_"+string(rune('a'+g))); !errors.Is(err, ErrUnknownToken) {
					t.Errorf("a made-up token: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, most := x.Loads()-start, int64(time.Since(began)/time.Second)+1; got > most {
		t.Errorf("16000 unknown tokens in %s loaded the index %d times, want at most %d", time.Since(began).Round(time.Millisecond), got, most)
	}

	// A principal added now is found within about a second.
	tok2, err := s.Add(ctx, Principal{ID: "ren", Kind: Employee, Purposes: []string{"marketing"}})
	if err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	for {
		id, err := x.Lookup(ctx, tok2)
		if err == nil {
			if id != "ren" {
				t.Fatalf("the new token names %q", id)
			}
			t.Logf("a principal added while the index is in use found after %s", time.Since(added).Round(time.Millisecond))
			break
		}
		if time.Since(added) > 2500*time.Millisecond {
			t.Fatalf("a principal added %s ago is still unknown: %v", time.Since(added).Round(time.Millisecond), err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Disabled, enabled, disabled …: each change is read at once, each in a part of its own.
	for i := 0; i < 6; i++ {
		want := i%2 == 0
		if _, err := s.Update(ctx, "hana", func(p *Principal) error { p.Disabled = want; return nil }); err != nil {
			t.Fatal(err)
		}
		p, err := x.Authenticate(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if p.Disabled != want {
			t.Fatalf("change %d: disabled=%v read back as %v (a stale row)", i, want, p.Disabled)
		}
	}
	// A withdrawn token is unknown, though the index still names its principal.
	if _, err := s.Update(ctx, "hana", func(p *Principal) error { _, h := NewToken(); p.TokenHashes = []string{h}; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Authenticate(ctx, tok); !errors.Is(err, ErrUnknownToken) {
		t.Errorf("a withdrawn token: %v, want ErrUnknownToken", err)
	}
}
