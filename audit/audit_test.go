package audit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

func newLog(t *testing.T, n int) (*Log, func(sql string)) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx := context.Background()
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	l := New(conn, cfg.ClickHouse.Database)
	for i := range n {
		d := Allowed
		if i%3 == 2 {
			d = Denied
		}
		if _, err := l.Append(ctx, Record{Principal: fmt.Sprintf("p%d", i%2), Kind: "contractor", ContractRef: "C-1", Purpose: "marketing",
			Report: "adoption", ParamsHash: "h", Decision: d, Rows: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// mutate runs an ALTER (a mutation, applied in the background on 18.16) and waits for it.
	mutate := func(sql string) {
		if err := conn.Exec(ctx, strings.ReplaceAll(sql, "$t", cfg.ClickHouse.Database+"_audit.audit_log")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			var pending uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = 'audit_log' AND is_done = 0", cfg.ClickHouse.Database+"_audit").Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("mutation not applied in 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return l, mutate
}

func TestChainVerifiesAndReports(t *testing.T) {
	l, _ := newLog(t, 6)
	ctx := context.Background()
	n, err := l.Verify(ctx)
	if err != nil || n != 6 {
		t.Fatalf("Verify = %d, %v; want 6 records, nil", n, err)
	}
	rs, err := l.Report(ctx, "p1", time.Now().UTC().Format("2006-01"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("p1 made 3 requests this month, report has %d", len(rs))
	}
	for _, r := range rs {
		if r.Principal != "p1" || r.ContractRef != "C-1" {
			t.Errorf("report row %+v", r)
		}
	}
	if rs, _ := l.Report(ctx, "p1", "2001-01"); len(rs) != 0 {
		t.Errorf("report of another month has %d rows", len(rs))
	}
	if _, err := l.Report(ctx, "p1", "January"); err == nil {
		t.Error("a bad month was accepted")
	}
	// A second Log on the same table continues the chain.
	l2 := New(l.conn, strings.TrimSuffix(l.table, "_audit.audit_log"))
	if _, err := l2.Append(ctx, Record{Principal: "p0", Decision: Allowed}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Verify(ctx); err != nil || n != 7 {
		t.Fatalf("after a second writer's append: %d, %v", n, err)
	}
}

func TestChainDetectsAnEditedRecord(t *testing.T) {
	l, mutate := newLog(t, 5)
	mutate("ALTER TABLE $t UPDATE rows = 0 WHERE seq = 3") // hide that rows were returned
	_, err := l.Verify(context.Background())
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "record 3 was edited") {
		t.Fatalf("Verify after editing record 3: %v", err)
	}
}

func TestChainDetectsADeletedRecord(t *testing.T) {
	l, mutate := newLog(t, 5)
	mutate("ALTER TABLE $t DELETE WHERE seq = 2")
	_, err := l.Verify(context.Background())
	if !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "record 2 has sequence 3") {
		t.Fatalf("Verify after deleting record 2: %v", err)
	}
}

// Concurrent requests are written in groups, and the chain still holds every record once, in
// the order the sequence gives.
func TestConcurrentAppendsGroupCommit(t *testing.T) {
	l, _ := newLog(t, 0)
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	seqs := make([]uint64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			r, err := l.Append(ctx, Record{Principal: fmt.Sprintf("p%d", i), Kind: "employee", Purpose: "marketing", Decision: Allowed})
			seqs[i], errs[i] = r.Seq, err
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seqs[i] == 0 || seqs[i] > n || seen[seqs[i]] {
			t.Fatalf("append %d got sequence %d (seen before: %v)", i, seqs[i], seen[seqs[i]])
		}
		seen[seqs[i]] = true
	}
	got, err := l.Verify(ctx)
	if err != nil || got != n {
		t.Fatalf("Verify: %d records, %v; want %d", got, err, n)
	}
	// Group commit: fewer inserts than records (each insert is a ClickHouse part).
	l.mu.Lock()
	groups := l.groups
	l.mu.Unlock()
	if groups >= n {
		t.Errorf("%d concurrent appends took %d inserts: no group commit", n, groups)
	}
	t.Logf("%d concurrent appends written in %d inserts", n, groups)
}

// Two processes append in turn (the query service and a retention run): each reads the tail
// before writing, so the chain stays one chain.
func TestTwoWritersTakingTurns(t *testing.T) {
	l1, _ := newLog(t, 3)
	l2 := New(l1.conn, strings.TrimSuffix(l1.table, "_audit.audit_log"))
	ctx := context.Background()
	for i := range 6 {
		l := l1
		if i%2 == 1 {
			l = l2
		}
		if _, err := l.Append(ctx, Record{Principal: "p", Kind: "employee", Decision: Allowed}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l1.Verify(ctx); err != nil || n != 9 {
		t.Fatalf("Verify: %d %v", n, err)
	}
}

// A chain written before records had a tenant (the old fields only, an empty tenant_id), continued by
// records with and without one, still verifies: the tenant is in the hash only when not empty.
func TestOldFormatChainStillVerifies(t *testing.T) {
	l, _ := newLog(t, 0)
	ctx := context.Background()
	// Records as the code before the tenant wrote them: their hash over the old fields only.
	b, err := l.conn.PrepareBatch(ctx, "INSERT INTO "+l.table+" (seq, at, principal_id, principal_kind, contract_ref, purpose, ticket, report, params_hash, decision, reason, rows, budget_epsilon, prev_hash, hash)")
	if err != nil {
		t.Fatal(err)
	}
	prev := ""
	at := time.Now().UTC().Truncate(time.Second)
	for i := uint64(1); i <= 3; i++ {
		hash := chain.Digest(prev, strconv.FormatUint(i, 10), at.Format(time.RFC3339), "helpdesk", "employee", "", "support",
			"T-1", "support_trace", "h", Allowed, "", strconv.FormatUint(i, 10), "0")
		if err := b.Append(i, at, "helpdesk", "employee", "", "support", "T-1", "support_trace", "h", Allowed, "", i, 0.0, prev, hash); err != nil {
			t.Fatal(err)
		}
		prev = hash
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Verify(ctx); err != nil || n != 3 {
		t.Fatalf("the old chain: %d, %v", n, err)
	}
	if _, err := l.Append(ctx, Record{Principal: "helpdesk", Kind: "employee", Purpose: "support", Report: "support_trace", Tenant: "acme", Decision: Allowed}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, Record{Principal: "pm", Kind: "employee", Purpose: "marketing", Report: "adoption", Decision: Allowed}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Verify(ctx); err != nil || n != 5 {
		t.Fatalf("the old chain continued: %d, %v", n, err)
	}
	rs, err := l.Report(ctx, "helpdesk", time.Now().UTC().Format("2006-01"))
	if err != nil || len(rs) != 4 || rs[3].Tenant != "acme" || rs[0].Tenant != "" {
		t.Fatalf("report: %+v, %v", rs, err)
	}
}

// The tenant of a record is covered by its hash: editing it, or blanking it, breaks the chain.
func TestChainDetectsAnEditedTenant(t *testing.T) {
	for _, edit := range []string{
		"ALTER TABLE $t UPDATE tenant_id = 'beta-co' WHERE seq = 2", // hide which tenant was read
		"ALTER TABLE $t UPDATE tenant_id = '' WHERE seq = 2",        // or that one was
		"ALTER TABLE $t UPDATE tenant_id = 'acme' WHERE seq = 3",    // or name one that was not
	} {
		l, mutate := newLog(t, 0)
		ctx := context.Background()
		for _, tenant := range []string{"acme", "acme", ""} {
			if _, err := l.Append(ctx, Record{Principal: "helpdesk", Kind: "employee", Purpose: "support", Report: "support_trace", Tenant: tenant, Decision: Allowed}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := l.Verify(ctx); err != nil || n != 3 {
			t.Fatalf("before the edit: %d %v", n, err)
		}
		mutate(edit)
		if _, err := l.Verify(ctx); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "was edited") {
			t.Errorf("Verify after %q: %v", edit, err)
		}
	}
}

// ReportTo, 'shukei audit report': the month's records of the principal as WriteReport writes them.
func TestReportTo(t *testing.T) {
	l, _ := newLog(t, 4)
	ctx, month := context.Background(), time.Now().UTC().Format("2006-01")
	rs, err := l.Report(ctx, "p1", month)
	if err != nil {
		t.Fatal(err)
	}
	var got, want strings.Builder
	if err := l.ReportTo(ctx, &got, "p1", month); err != nil {
		t.Fatal(err)
	}
	WriteReport(&want, "p1", month, rs)
	if got.String() != want.String() {
		t.Errorf("got\n%s\nwant\n%s", got.String(), want.String())
	}
	if err := l.ReportTo(ctx, &got, "p1", "January"); err == nil {
		t.Error("a bad month was accepted")
	}
}
