package migrations_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/policy"
)

// migrated applies the schema to a database of the test's own and returns a fresh master key.
func migrated(t *testing.T) (context.Context, config.Config, string, *pseudonym.MasterKey) {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if _, err := migrations.Apply(ctx, conn, cfg.ClickHouse.Database); err != nil {
		t.Fatal(err)
	}
	master, err := pseudonym.ParseMasterKey(pseudonym.NewMasterKeyText())
	if err != nil {
		t.Fatal(err)
	}
	return ctx, cfg, cfg.ClickHouse.Database, master
}

// Each purpose's reader reads its own database and nothing else, and writes nothing.
func TestPurposeReadersOnRealServer(t *testing.T) {
	ctx, cfg, db, master := migrated(t)
	readers := migrations.Readers(db, master.Derive("test-query"))
	if len(readers) != 7 {
		t.Fatalf("%d readers, want one per purpose (7)", len(readers))
	}
	dir := servicetest.UsersDir(t)
	path, err := migrations.WriteUsers(dir, db, migrations.ReaderUsers(readers), []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	if filepath.Base(path) != migrations.UsersFileName(db) {
		t.Errorf("users file %s", path)
	}
	b, _ := os.ReadFile(path)
	for _, r := range readers {
		if strings.Contains(string(b), r.Password) {
			t.Fatalf("the users file holds %s's password in clear", r.User)
		}
	}

	for _, r := range readers {
		rc, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), r, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		if err := rc.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ?", r.Database).Scan(&n); err != nil {
			t.Errorf("%s lists its tables: %v", r.User, err)
		}
		if n == 0 && r.Purpose != "external_consented" {
			t.Errorf("%s sees no tables in %s", r.User, r.Database)
		}
		if err := rc.QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&n); err == nil || !strings.Contains(err.Error(), "Access denied") {
			t.Errorf("%s read the internal event store: %v", r.User, err)
		}
		other := readers[0]
		if other.Purpose == r.Purpose {
			other = readers[1]
		}
		if err := rc.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ?", other.Database).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := rc.Exec(ctx, "CREATE TABLE "+r.Database+".intruder (x UInt8) ENGINE = Memory"); err == nil || !strings.Contains(err.Error(), "readonly") {
			t.Errorf("%s created a table: %v", r.User, err)
		}
		rc.Close()
	}
	// Reading another purpose's mart is refused.
	si, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), readers[1], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer si.Close()
	var n uint64
	err = si.QueryRow(ctx, "SELECT count() FROM "+db+"_marketing.activity_daily").Scan(&n)
	if err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("%s read the marketing mart: %v", readers[1].User, err)
	}
	// A wrong password does not connect.
	bad := readers[0]
	bad.Password = "not-it"
	if c, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), bad, 0); err == nil {
		c.Close()
		t.Error("a reader connected with a wrong password")
	}
}

// Each purpose reader of an aggregate purpose reads its purpose's database and its gated
// atoms, nothing else; no other read-only user is declared (Grafana reads the query service,
// promise 10).
func TestGatedReadersOnRealServer(t *testing.T) {
	ctx, cfg, db, master := migrated(t)
	readers := migrations.Readers(db, master.Derive("test-query"))
	path, err := migrations.WriteUsers(servicetest.UsersDir(t), db, migrations.ReaderUsers(readers), []string{"127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "<password_sha256_hex>"); n != len(policy.Purposes()) || strings.Contains(string(b), "dashboards") {
		t.Errorf("the users file declares %d users (want one per purpose, %d):\n%s", n, len(policy.Purposes()), b)
	}
	for _, r := range readers {
		if r.Purpose != "service_improvement" && r.Purpose != "marketing" {
			continue
		}
		rc, err := migrations.OpenReader(ctx, cfg.ClickHouse.Options(), r, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, table := range []string{"_" + r.Purpose + "_gated.atoms", "_" + r.Purpose + "_gated.seals"} {
			if err := rc.QueryRow(ctx, "SELECT count() FROM "+db+table).Scan(&n); err != nil {
				t.Errorf("%s cannot read %s: %v", r.User, table, err)
			}
		}
		other := map[string]string{"service_improvement": "marketing", "marketing": "service_improvement"}[r.Purpose]
		for _, table := range []string{"_" + other + "_gated.atoms", ".events", "_audit.audit_log"} {
			if err := rc.QueryRow(ctx, "SELECT count() FROM "+db+table).Scan(&n); err == nil || !strings.Contains(err.Error(), "Access denied") {
				t.Errorf("%s read %s: %v", r.User, db+table, err)
			}
		}
		if err := rc.Exec(ctx, "CREATE TABLE "+db+"_"+r.Purpose+"_gated.intruder (x UInt8) ENGINE = Memory"); err == nil || !strings.Contains(err.Error(), "readonly") {
			t.Errorf("%s created a table: %v", r.User, err)
		}
		rc.Close()
	}
}
