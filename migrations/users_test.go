package migrations_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
)

// Every role's user is allowed exactly the databases of its row of promise 16's matrix, and
// ClickHouse — not Shukei's code — refuses the rest: it can read every table of its
// databases, insert only where it writes, and reaches no other database of the prefix.
func TestRoleUsersMatrixOnRealServer(t *testing.T) {
	ctx, cfg, db, master := migrated(t)
	users := migrations.AllUsers(db, master.Derive("test-users"))
	path, err := migrations.WriteUsers(servicetest.UsersDir(t), db, users, []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })

	admin, err := ch.Open(cfg.ClickHouse.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// Every table of every database of the prefix, as the administrator sees them.
	rows, err := admin.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE (database = ? OR startsWith(database, ?)) AND engine NOT IN ('View', 'MaterializedView') ORDER BY database, name", db, db+"_")
	if err != nil {
		t.Fatal(err)
	}
	type table struct{ db, name string }
	var tables []table
	for rows.Next() {
		var tb table
		var engine string
		if err := rows.Scan(&tb.db, &tb.name, &engine); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tb.name, ".inner") {
			tables = append(tables, tb)
		}
	}
	rows.Close()
	if len(tables) < 25 {
		t.Fatalf("only %d tables under %s: migrations incomplete?", len(tables), db)
	}
	for _, u := range users {
		c, err := migrations.OpenAs(ctx, cfg.ClickHouse.Options(), u.Name, u.Password, u.Databases[0], 30*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", u.Name, err)
		}
		for _, tb := range tables {
			allowed := slices.Contains(u.Databases, tb.db)
			full := tb.db + "." + tb.name
			var n uint64
			rerr := c.QueryRow(ctx, "SELECT count() FROM "+full).Scan(&n)
			if allowed != (rerr == nil) {
				t.Errorf("%s (%s) SELECT %s: allowed=%v, got err=%v", u.Name, u.Mode, full, allowed, rerr)
			}
			// INSERT … SELECT of nothing: a write that changes no row, refused or not.
			werr := c.Exec(ctx, "INSERT INTO "+full+" SELECT * FROM "+full+" WHERE 0")
			if canWrite := allowed && u.Mode != migrations.ReadOnly; canWrite != (werr == nil) {
				t.Errorf("%s (%s) INSERT %s: allowed=%v, got err=%v", u.Name, u.Mode, full, canWrite, werr)
			}
			if !allowed && rerr != nil && !strings.Contains(rerr.Error(), "Access denied") {
				t.Errorf("%s SELECT %s refused for another reason: %v", u.Name, full, rerr)
			}
		}
		// Read-only users cannot lift their profile, nor run DDL, even with the settings a
		// query may carry.
		if u.Mode == migrations.ReadOnly {
			scratch := u.Databases[0] + ".scratch_" + strings.ReplaceAll(u.Name, db+"_", "")
			if err := c.Exec(ctx, "CREATE TABLE "+scratch+" (x UInt8) ENGINE = Log"); err == nil {
				t.Errorf("%s created %s", u.Name, scratch)
			}
			if err := c.Exec(ctx, "SET readonly = 0"); err == nil {
				t.Errorf("%s lifted readonly", u.Name)
			}
			// No table function (remote(), cluster(), url() would send a read elsewhere, as
			// another user), no SETTINGS clause (prefer_localhost_replica = 0 would send a
			// Distributed read through another node), and settings sent with the query are
			// ignored, not applied.
			var n uint64
			for _, q := range []string{
				"SELECT count() FROM numbers(3)",
				"SELECT count() FROM remote('127.0.0.1', system.one)",
				"SELECT count() FROM system.one SETTINGS prefer_localhost_replica = 0",
			} {
				if err := c.QueryRow(ctx, q).Scan(&n); err == nil || !strings.Contains(err.Error(), "readonly") {
					t.Errorf("%s: %s: %v, want refused in readonly mode", u.Name, q, err)
				}
			}
			var v string
			sctx := ch.Context(ctx, ch.WithSettings(ch.Settings{"max_result_rows": 7}))
			if err := c.QueryRow(sctx, "SELECT value FROM system.settings WHERE name = 'max_result_rows'").Scan(&v); err != nil || v == "7" {
				t.Errorf("%s: a setting sent with the query: max_result_rows = %q (%v), want the profile's", u.Name, v, err)
			}
		}
		c.Close()
	}
	// The administrator alone writes principals.
	for _, u := range users {
		if slices.Contains(u.Databases, db+"_principals") && u.Mode != migrations.ReadOnly {
			t.Errorf("%s may write the principals", u.Name)
		}
	}
	if got := fmt.Sprint(len(users)); got != "17" {
		t.Errorf("%s users, want 17", got)
	}
}
