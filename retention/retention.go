// Package retention carries out the end of a tenant's data (docs/DESIGN.md §7, clause 2(3)): after
// its contract end plus the policy's retention period, every row of the tenant is deleted from
// every table that has a tenant_id column — the event store, the rejections, the purpose marts
// and rollups, the registry entry, its consents and tickets — its pseudonymisation root is
// destroyed first (crypto-shredding: what might remain elsewhere can no longer be linked), and a
// deletion receipt is appended to the audit log. It also drops whole monthly partitions older
// than the policy keeps them (ClickHouse 18.16 has no TTL), and deletes the aggregator's
// un-noised partial aggregates of windows released more than aggregator.state_retention ago.
// Published DP releases are kept: they are differentially private across tenants and hold no
// tenant id. What Kafka still holds of a tenant ages out with the topics' retention
// (TopicHorizons): Kafka cannot delete one tenant's records.
package retention

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/processor"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// Keeper deletes what the policy no longer allows to keep.
type Keeper struct {
	conn   driver.Conn
	read   driver.Conn // reads the releases; conn when nil
	db     string
	reg    *registry.Registry
	audit  *audit.Log
	policy policy.Retention
	// stateMargin is how long after its release a window's partial aggregates are kept.
	stateMargin time.Duration
	// periods are the weeks and months the aggregator releases: a window's tenant rows are
	// kept until every one containing it is released.
	periods []aggregator.Period
	// tombstoneKey keys the tombstone a deletion leaves (decision.TenantTombstone); nil: none.
	tombstoneKey []byte
	// commitWindow is how long after a tombstone a processor's batch decided before it may
	// still bring rows of the tenant (processor.CommitWindow): a deletion waits it out.
	commitWindow time.Duration
}

// Deps are the keeper's collaborators, which NewKeeper and Open build and tests inject.
type Deps struct {
	Conn     driver.Conn // deletes tenants' rows and expired data
	Read     driver.Conn // reads the releases (retention's read-only user, promise 16); Conn when nil
	Database string      // the database (and its purpose databases) the keeper keeps
	Registry *registry.Registry
	Audit    *audit.Log // receives the deletion receipts
	Policy   policy.Retention
	// TombstoneKey keys the tombstone a deletion leaves in the registry — the processor's
	// refusal hash key (master key, "dlq"). With it, a deleted tenant's events still in Kafka
	// are refused as tenant_deleted and keep nothing; without it (nil) they would be kept as
	// unknown_tenant refusals, with the tenant's id.
	TombstoneKey []byte
}

// New returns a keeper with the settings of cfg.Aggregator: how long after a window's release
// its partial aggregates are kept (state_retention; zero: the default) and the periods it
// releases beyond its base windows (weeks, months: week_epsilon and month_epsilon).
func New(cfg config.Config, d Deps) *Keeper {
	margin := cfg.Aggregator.StateRetention
	if margin == 0 {
		margin = config.Default().Aggregator.StateRetention
	}
	return &Keeper{conn: d.Conn, read: d.Read, db: d.Database, reg: d.Registry, audit: d.Audit, policy: d.Policy,
		stateMargin: margin, periods: aggregator.PeriodsOf(cfg.Aggregator), tombstoneKey: d.TombstoneKey,
		commitWindow: processor.CommitWindow}
}

func (k *Keeper) readConn() driver.Conn {
	if k.read != nil {
		return k.read
	}
	return k.conn
}

// Table is a table holding tenant rows.
type Table struct{ Database, Name string }

func (t Table) String() string { return t.Database + "." + t.Name }

// TenantTables lists every table of the Shukei databases with a tenant_id column: new tables
// are covered without changing this code. The audit log is not among them: it is the proof of
// who read which tenant's data and of the deletion itself, a hash chain that a deletion would
// break (promise 8 names it as the one exception).
func (k *Keeper) TenantTables(ctx context.Context) ([]Table, error) {
	rows, err := k.conn.Query(ctx, `
SELECT c.database, c.table
FROM system.columns AS c
ANY INNER JOIN (SELECT database, name AS table, engine FROM system.tables) AS t USING (database, table)
WHERE c.name = 'tenant_id' AND (c.database = ? OR startsWith(c.database, ?)) AND t.engine NOT IN ('View', 'MaterializedView')
  AND NOT (c.database = ? AND c.table = 'audit_log')
ORDER BY c.database, c.table`, k.db, k.db+"_", databases.Audit(k.db))
	if err != nil {
		return nil, fmt.Errorf("list the tables with tenant rows: %w", err)
	}
	defer rows.Close()
	var out []Table
	for rows.Next() {
		var t Table
		if err := rows.Scan(&t.Database, &t.Name); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Count is what is left of a tenant in one table.
type Count struct {
	Table Table
	Rows  uint64
}

// Verify counts the tenant's rows in every table, and its pseudonymisation root.
func (k *Keeper) Verify(ctx context.Context, tenant string) ([]Count, error) {
	tables, err := k.TenantTables(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Count, 0, len(tables))
	for _, t := range tables {
		var n uint64
		if err := k.conn.QueryRow(ctx, "SELECT count() FROM "+t.String()+" WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s in %s: %w", tenant, t, err)
		}
		out = append(out, Count{Table: t, Rows: n})
	}
	return out, nil
}

// Receipt is what a deletion did.
type Receipt struct {
	Tenant   string
	Rows     uint64 // rows deleted
	Tables   int    // tables that held some
	AuditSeq uint64
}

// DeleteTenant deletes every row of tenant and destroys its keys, waits until ClickHouse has
// applied the deletions, checks nothing is left, and appends the receipt to the audit log.
func (k *Keeper) DeleteTenant(ctx context.Context, tenant, why string) (Receipt, error) {
	if err := k.beginDeletion(ctx, tenant); err != nil {
		return Receipt{}, err
	}
	if err := k.waitCommitWindow(ctx); err != nil {
		return Receipt{}, err
	}
	return k.finishDeletion(ctx, tenant, why)
}

// beginDeletion records the tenant's tombstone and destroys its keys.
func (k *Keeper) beginDeletion(ctx context.Context, tenant string) error {
	// The tombstone first: from this moment a processor refuses the tenant's events still in
	// Kafka as deleted and keeps nothing of them, instead of keeping them as unknown.
	if k.tombstoneKey != nil {
		if err := k.reg.Tombstone(ctx, decision.TenantTombstone(k.tombstoneKey, tenant), time.Now()); err != nil {
			return err
		}
	}
	// Keys next: from this moment no pseudonym of the tenant can be made or linked again.
	return k.reg.DestroyKeys(ctx, tenant)
}

// waitCommitWindow waits until every batch a processor decided before the tombstones has been
// stored or abandoned (the processor checks its tenants against the tombstones before each
// packet it sends): deleting before would leave the rows that land afterwards.
func (k *Keeper) waitCommitWindow(ctx context.Context) error {
	if k.tombstoneKey == nil || k.commitWindow <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(k.commitWindow):
		return nil
	}
}

// finishDeletion deletes every row of the tenant, waits for ClickHouse, verifies nothing is
// left and writes the receipt.
func (k *Keeper) finishDeletion(ctx context.Context, tenant, why string) (Receipt, error) {
	before, err := k.Verify(ctx, tenant)
	if err != nil {
		return Receipt{}, err
	}
	r := Receipt{Tenant: tenant}
	var touched []Table
	for _, c := range before {
		if c.Rows == 0 {
			continue
		}
		r.Rows += c.Rows
		r.Tables++
		touched = append(touched, c.Table)
		if err := k.conn.Exec(ctx, "ALTER TABLE "+c.Table.String()+" DELETE WHERE tenant_id = ?", tenant); err != nil {
			return r, fmt.Errorf("delete %s from %s: %w", tenant, c.Table, err)
		}
	}
	if err := k.waitMutations(ctx, touched); err != nil {
		return r, err
	}
	after, err := k.Verify(ctx, tenant)
	if err != nil {
		return r, err
	}
	for _, c := range after {
		if c.Rows > 0 {
			return r, fmt.Errorf("after deletion %s still holds %d rows of %s", c.Table, c.Rows, tenant)
		}
	}
	rec, err := k.audit.Append(ctx, audit.Record{
		Principal: "retention", Kind: "system", Report: "tenant_deletion", Decision: "deleted", Rows: r.Rows,
		Reason: fmt.Sprintf("tenant %s deleted (%s): %d rows in %d tables; pseudonymisation root destroyed", tenant, why, r.Rows, r.Tables),
	})
	if err != nil {
		return r, fmt.Errorf("the deletion of %s is done but its receipt could not be written: %w", tenant, err)
	}
	r.AuditSeq = rec.Seq
	return r, nil
}

// Sweep deletes the rows of every deleted tenant (one with a tombstone) that any table holds:
// rows a process brought after the tenant's deletion (a processor paused between its last
// check and its send, an aggregator's state written from marts it read before). Run does it
// every time; it returns how many rows it deleted, by table.
func (k *Keeper) Sweep(ctx context.Context) (map[Table]uint64, error) {
	if k.tombstoneKey == nil {
		return nil, nil
	}
	gone, err := k.reg.Tombstones(ctx)
	if err != nil || len(gone) == 0 {
		return nil, err
	}
	tables, err := k.TenantTables(ctx)
	if err != nil {
		return nil, err
	}
	swept := map[Table]uint64{}
	var touched []Table
	for _, t := range tables {
		rows, err := k.conn.Query(ctx, "SELECT tenant_id, count() FROM "+t.String()+" GROUP BY tenant_id")
		if err != nil {
			return nil, fmt.Errorf("tenants of %s: %w", t, err)
		}
		var deleted []string
		var n uint64
		for rows.Next() {
			var id string
			var c uint64
			if err := rows.Scan(&id, &c); err != nil {
				rows.Close()
				return nil, err
			}
			if id != "" && gone[decision.TenantTombstone(k.tombstoneKey, id)] {
				deleted = append(deleted, id)
				n += c
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, id := range deleted {
			if err := k.conn.Exec(ctx, "ALTER TABLE "+t.String()+" DELETE WHERE tenant_id = ?", id); err != nil {
				return nil, fmt.Errorf("sweep a deleted tenant from %s: %w", t, err)
			}
		}
		if len(deleted) > 0 {
			swept[t] = n
			touched = append(touched, t)
		}
	}
	if err := k.waitMutations(ctx, touched); err != nil {
		return swept, err
	}
	if len(swept) > 0 {
		var total uint64
		for _, n := range swept {
			total += n
		}
		if _, err := k.audit.Append(ctx, audit.Record{
			Principal: "retention", Kind: "system", Report: "tenant_deletion", Decision: "swept", Rows: total,
			Reason: fmt.Sprintf("rows of deleted tenants that arrived after their deletion: %d rows in %d tables", total, len(swept)),
		}); err != nil {
			return swept, fmt.Errorf("the sweep is done but its receipt could not be written: %w", err)
		}
	}
	return swept, nil
}

// waitMutations waits until ClickHouse has applied every pending mutation of tables.
func (k *Keeper) waitMutations(ctx context.Context, tables []Table) error {
	for _, t := range tables {
		for {
			var pending uint64
			if err := k.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND table = ? AND is_done = 0", t.Database, t.Name).Scan(&pending); err != nil {
				return err
			}
			if pending == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for the deletion in %s: %w", t, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Due returns the tenants whose contract ended at least the retention period before now.
func (k *Keeper) Due(ctx context.Context, now time.Time) ([]registry.Tenant, error) {
	all, err := k.reg.List(ctx)
	if err != nil {
		return nil, err
	}
	var due []registry.Tenant
	for _, t := range all {
		if !t.ContractEnd.IsZero() && !now.Before(t.ContractEnd.Add(k.policy.AfterContractEnd)) {
			due = append(due, t)
		}
	}
	return due, nil
}

// Expiring are the monthly-partitioned tables and how long each keeps its data; the audit log,
// the budget ledger and the published releases are kept (they are the proof of what was done),
// and so are the gated atoms (<db>_<purpose>_gated): aggregates of at least k tenants with no
// tenant id, sealed once — dropping a sealed week would only make its reports change.
func (k *Keeper) expiring() map[string]time.Duration {
	store, dlq := k.policy.EventStore, k.policy.DLQ
	m := map[string]time.Duration{
		k.db + ".events":     store,
		k.db + ".rejections": dlq,
	}
	for _, t := range []string{"_support.trace", "_service_improvement.feature_daily", "_marketing.activity_daily",
		"_follow_up.tenant_daily", "_follow_up.tenant_weekly",
		"_interview_selection.tenant_daily", "_interview_selection.tenant_weekly", "_external_consented.tenant_daily"} {
		m[k.db+t] = store
	}
	return m
}

// Dropped is one partition dropped.
type Dropped struct {
	Table     string
	Partition string
}

// DropExpired drops every monthly partition whose whole month is older than its table keeps
// data. Partitions are YYYYMM of the table's time column.
func (k *Keeper) DropExpired(ctx context.Context, now time.Time) ([]Dropped, error) {
	var out []Dropped
	tables := k.expiring()
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, table := range names {
		keep := tables[table]
		if keep <= 0 {
			continue
		}
		db, name, _ := strings.Cut(table, ".")
		rows, err := k.conn.Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active", db, name)
		if err != nil {
			return out, err
		}
		var parts []string
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return out, err
			}
			parts = append(parts, p)
		}
		rows.Close()
		cutoff := now.Add(-keep)
		for _, p := range parts {
			ym, err := strconv.Atoi(p)
			if err != nil || ym < 190001 {
				continue // not a YYYYMM partition
			}
			monthEnd := time.Date(ym/100, time.Month(ym%100), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
			if !monthEnd.After(cutoff) {
				if err := k.conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+strconv.Itoa(ym)); err != nil {
					return out, fmt.Errorf("drop partition %d of %s: %w", ym, table, err)
				}
				out = append(out, Dropped{Table: table, Partition: p})
			}
		}
	}
	return out, nil
}

// Report is what one run did.
type Report struct {
	Deleted []Receipt
	// Swept are rows of tenants deleted earlier that reached a table after their deletion.
	Swept   map[Table]uint64
	Dropped []Dropped
	// State is what was deleted of the aggregator's internal state: the partial aggregates of
	// windows released more than aggregator.state_retention ago, superseded progress rows.
	State aggregator.StateExpiry
}

// Nothing says whether the run deleted nothing.
func (r Report) Nothing() bool {
	return len(r.Deleted) == 0 && len(r.Swept) == 0 && len(r.Dropped) == 0 && r.State.Deleted() == 0
}

// Run deletes the tenants that are due, drops expired partitions and deletes the expired
// aggregator state.
func (k *Keeper) Run(ctx context.Context, now time.Time) (Report, error) {
	var rep Report
	due, err := k.Due(ctx, now)
	if err != nil {
		return rep, err
	}
	// Every due tenant's deletion begins, then one commit window passes for all of them.
	for _, t := range due {
		if err := k.beginDeletion(ctx, t.ID); err != nil {
			return rep, err
		}
	}
	if len(due) > 0 {
		if err := k.waitCommitWindow(ctx); err != nil {
			return rep, err
		}
	}
	for _, t := range due {
		why := fmt.Sprintf("contract ended %s, retention %s", t.ContractEnd.Format("2006-01-02"), k.policy.AfterContractEnd)
		r, err := k.finishDeletion(ctx, t.ID, why)
		if err != nil {
			return rep, err
		}
		rep.Deleted = append(rep.Deleted, r)
	}
	if rep.Swept, err = k.Sweep(ctx); err != nil {
		return rep, err
	}
	if rep.Dropped, err = k.DropExpired(ctx, now); err != nil {
		return rep, err
	}
	rep.State, err = aggregator.ExpireState(ctx, k.conn, k.readConn(), k.db, now, k.stateMargin, k.periods)
	return rep, err
}
