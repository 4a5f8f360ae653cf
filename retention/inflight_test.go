package retention_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

// Promise 8 against a writer slower than the commit window: an insert the server received
// before the deletion's tombstone, still sending its data (a block every 4 s, each within the
// server's receive_timeout) when the commit window has passed, lands only after that. The
// deletion waits for it to end before it deletes: when 'tenants delete' returns, the row it
// brought is gone, and nothing of the tenant arrives afterwards.
func TestDeletionWaitsForInsertsOpenedBeforeIt(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic = servicetest.Name(t, "raw."), servicetest.Name(t, "dlq.") // never created
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	cfg.Anonymizer.MasterKey = pseudonym.NewMasterKeyText() // a deletion leaves a tombstone
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	const tenant = "slow-writer-victim"
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"receive_timeout": 10}))
	b, err := conn.PrepareBatch(ictx, "INSERT INTO "+db+"_aggregator.aggregate_state (kind, plan_hash, tenant_id, metric, cell)")
	if err != nil {
		t.Fatal(err)
	}
	const blocks, every = 7, 4 * time.Second // 28 s: longer than the commit window
	sent := make(chan error, 1)
	var sentAt time.Time
	go func() {
		for i := range blocks {
			time.Sleep(every)
			if err := b.Append("tenant", "test-plan", tenant, "feature_adoption", "cell-"+string(rune('a'+i))); err != nil {
				sent <- err
				return
			}
			if i < blocks-1 {
				if err := b.Flush(); err != nil {
					sent <- err
					return
				}
			}
		}
		err := b.Send()
		sentAt = time.Now()
		sent <- err
	}()

	began := time.Now()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out strings.Builder
	err = retention.DeleteTenantTo(ctx, &out, cfg, quiet, tenant, "a test")
	returned := time.Now()
	t.Logf("the deletion took %s: %v; %s", returned.Sub(began).Round(time.Millisecond), err, strings.TrimSpace(out.String()))
	if serr := <-sent; serr != nil {
		t.Fatalf("the slow insert failed: %v", serr)
	}
	t.Logf("the slow insert ended %s after the deletion began", sentAt.Sub(began).Round(time.Millisecond))
	if returned.Before(sentAt) {
		t.Errorf("the deletion returned %s before the insert opened before it ended", sentAt.Sub(returned).Round(time.Millisecond))
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"_aggregator.aggregate_state WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows of the deleted tenant in aggregate_state after 'tenants delete' returned", n)
	}
}

// Other databases come and go on the same server (another deployment's tests, a dropped
// stack): listing the tables that hold tenant rows — which every deletion, verification and
// sweep does — is not failed by a table dropped elsewhere while it reads the catalogue.
func TestTenantTablesIgnoreOtherDatabasesDroppedMeanwhile(t *testing.T) {
	conn, cfg := servicetest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := cfg.ClickHouse.Database
	if _, err := migrations.Apply(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	k := retention.New(config.Config{}, retention.Deps{Conn: conn, Database: db, Registry: registry.New(conn, db, nil), Audit: audit.New(conn, db)})
	want, err := k.TenantTables(ctx)
	if err != nil || len(want) < 10 {
		t.Fatalf("%d tables (%v)", len(want), err)
	}
	// Three writers create databases of ten tables each, rename the tables into a second
	// database (as migrations move tables between databases) and drop both.
	other := "zz_churn_" + strings.ReplaceAll(servicetest.Name(t, ""), ".", "_")
	stop := make(chan struct{})
	churned := make(chan int, 3)
	for w := range 3 {
		go func() {
			n := 0
			defer func() { churned <- n }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, b := fmt.Sprintf("%s_%d_a", other, w), fmt.Sprintf("%s_%d_b", other, w)
				qs := []string{"CREATE DATABASE IF NOT EXISTS " + a, "CREATE DATABASE IF NOT EXISTS " + b}
				for i := range 10 {
					qs = append(qs, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.t%d (tenant_id String, x UInt8) ENGINE = MergeTree ORDER BY tenant_id", a, i))
				}
				for i := range 10 {
					qs = append(qs, fmt.Sprintf("RENAME TABLE %s.t%d TO %s.t%d", a, i, b, i))
				}
				qs = append(qs, "DROP DATABASE IF EXISTS "+a, "DROP DATABASE IF EXISTS "+b)
				for _, q := range qs {
					if err := conn.Exec(ctx, q); err != nil {
						t.Errorf("churn: %s: %v", q, err)
						return
					}
				}
				n++
			}
		}()
	}
	for i := range 200 {
		got, err := k.TenantTables(ctx)
		if err != nil {
			t.Errorf("listing %d, beside drops of other databases: %v", i, err)
			break
		}
		if len(got) != len(want) {
			t.Errorf("listing %d: %d tables, want %d", i, len(got), len(want))
			break
		}
	}
	close(stop)
	t.Logf("%d rounds of other databases created, renamed into and dropped meanwhile", <-churned+<-churned+<-churned)
}
