package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/query/principal"
)

// principals add --approver grants the approver role (employees and affiliates only), list
// shows it; 'shukei breakglass' and 'shukei audit report' show rows stored before free text was
// refused unless printable with every non-printable character escaped, and the audit tenant.
func TestBreakGlassAndAuditListingsOnRealServices(t *testing.T) {
	conn, db := migratedDB(t)
	ctx := context.Background()
	out, err := runCLI(t, "principals", "add", "--id", "dpo", "--kind", "employee", "--purposes", "service_improvement", "--approver")
	if err != nil || !strings.Contains(out, "breakglass_approver") {
		t.Fatalf("principals add --approver: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "principals", "add", "--id", "agency", "--kind", "contractor", "--purposes", "marketing",
		"--contract-ref", "C-1", "--expires", "2099-01-01", "--approver"); err == nil || !strings.Contains(err.Error(), "only employees and affiliates") {
		t.Errorf("a contractor approver was accepted: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "principals", "add", "--id", "hana", "--kind", "employee", "--purposes", "support"); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "principals", "list")
	if err != nil || !strings.Contains(out, "ROLES") {
		t.Fatalf("principals list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "dpo "):
			if !strings.Contains(line, "breakglass_approver") {
				t.Errorf("dpo's line lacks its role: %q", line)
			}
		case strings.HasPrefix(line, "hana "):
			if strings.Contains(line, "breakglass_approver") {
				t.Errorf("hana's line shows a role: %q", line)
			}
		}
	}

	// A grant and audit records as stored before: a justification that would move the cursor
	// up and erase the line above, reverse the text and fake a line of its own.
	hostile := "Police inquiry ref. 7\x1b[1A\x1b[2K\u202eok\nbg-fake  hana  acme  3(2)-7  open"
	now := time.Now().UTC().Truncate(time.Second)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"_breakglass.breakglass_actions (grant_id, seq, action, principal_id, at, tenant_id, purpose, clause, justification, ttl_seconds)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append("bg-old", uint64(1), "request", "hana", now, "acme", "support", "3(2)-7", hostile, uint32(3600)); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	ab, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"_audit.audit_log (seq, at, principal_id, principal_kind, contract_ref, purpose, ticket, report, params_hash, decision, reason, rows, budget_epsilon, tenant_id, prev_hash, hash)")
	if err != nil {
		t.Fatal(err)
	}
	reason := "clause 3(2)-7, 1h0m0s for tenant acme: " + hostile
	h1 := chain.Digest("", "1", now.Format(time.RFC3339), "hana", "employee", "", "support", "bg-old", "breakglass_request", "", "requested", reason, "0", "0")
	h2 := chain.Digest(h1, "2", now.Format(time.RFC3339), "hana", "employee", "", "support", "T-1", "support_trace", "h", "allowed", "", "3", "0", "acme")
	if err := ab.Append(uint64(1), now, "hana", "employee", "", "support", "bg-old", "breakglass_request", "", "requested", reason, uint64(0), 0.0, "", "", h1); err != nil {
		t.Fatal(err)
	}
	if err := ab.Append(uint64(2), now, "hana", "employee", "", "support", "T-1", "support_trace", "h", "allowed", "", uint64(3), 0.0, "acme", h1, h2); err != nil {
		t.Fatal(err)
	}
	if err := ab.Send(); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{"breakglass"}, {"audit", "report", "--principal", "hana", "--month", now.Format("2006-01")}} {
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if strings.ContainsAny(out, "\x1b\u202e\r") || strings.Contains(out, "\nbg-fake") {
			t.Errorf("%v printed the text raw:\n%q", args, out)
		}
		if !strings.Contains(out, `ref. 7\x1b[1A\x1b[2K\u202eok\nbg-fake`) {
			t.Errorf("%v does not show the text escaped:\n%s", args, out)
		}
	}
	out, _ = runCLI(t, "audit", "report", "--principal", "hana", "--month", now.Format("2006-01"))
	if !strings.Contains(out, "TENANT") || !lineWith(out, "support_trace", "acme") {
		t.Errorf("audit report without the tenant:\n%s", out)
	}
	if out, err := runCLI(t, "audit", "verify"); err != nil || !strings.Contains(out, "2 records, chain intact") {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}

// lineWith says whether a line of out holds every one of words.
func lineWith(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// A service principal (Grafana): the token goes to a file (0600), never to the output; run
// again with --exist-ok it changes nothing; with another grant it fails.
func TestPrincipalTokenFileAndExistOK(t *testing.T) {
	conn, db := migratedDB(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "query.token")
	args := []string{"principals", "add", "--id", "grafana", "--kind", "employee", "--purposes", "service_improvement,marketing,external_aggregate",
		"--token-file", file, "--exist-ok"}
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tok, err := os.ReadFile(file)
	if err != nil || !strings.HasPrefix(string(tok), "shq_") || strings.Contains(out, string(tok)) {
		t.Fatalf("token file %q (%v); output %q", tok, err, out)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", st.Mode().Perm())
	}
	p, err := principal.New(conn, db).Authenticate(ctx, string(tok))
	if err != nil || p.ID != "grafana" {
		t.Fatalf("the file's token does not sign in: %v %+v", err, p)
	}
	// Again: nothing changes, no new token.
	out, err = runCLI(t, args...)
	if again, _ := os.ReadFile(file); err != nil || string(again) != string(tok) || !strings.Contains(out, "nothing changed") {
		t.Errorf("second run: %v %q; token file changed: %v", err, out, string(again) != string(tok))
	}
	// Another grant under the same id: refused, nothing changed.
	other := slices.Clone(args)
	other[7] = "service_improvement,follow_up"
	if out, err := runCLI(t, other...); err == nil {
		t.Errorf("--exist-ok with other purposes succeeded: %s", out)
	}
	if got, _ := principal.New(conn, db).Get(ctx, "grafana"); slices.Contains(got.Purposes, "follow_up") {
		t.Errorf("the grant changed: %v", got.Purposes)
	}
	// --exist-ok without a token file makes no sense.
	if _, err := runCLI(t, "principals", "add", "--id", "x", "--purposes", "marketing", "--exist-ok"); err == nil {
		t.Error("--exist-ok without --token-file accepted")
	}
}

// migratedDB is a fresh, migrated database that the CLI run by the test uses.
func migratedDB(t *testing.T) (driver.Conn, string) {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	db := cfg.ClickHouse.Database
	t.Setenv("SHUKEI_CLICKHOUSE_DATABASE", db)
	if _, err := migrations.Apply(context.Background(), conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, db
}
