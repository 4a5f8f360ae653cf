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
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/migrations"
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
	// shards are the cluster's shards (clickhouse.cluster), each with a connection to every
	// replica; one server is one shard of one replica (conn).
	shards []processor.Shard
	// replicaWait is how long a replica that does not answer is waited for before a deletion
	// or its verification fails: both need every replica.
	replicaWait time.Duration
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
	// Shards are the cluster's shards (processor.ClusterShards) as retention's writer reaches
	// them; nil on one server.
	Shards []processor.Shard
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
		commitWindow: processor.CommitWindow, shards: d.Shards, replicaWait: 2 * time.Minute}
}

func (k *Keeper) readConn() driver.Conn {
	if k.read != nil {
		return k.read
	}
	return k.conn
}

// Table is a table holding tenant rows. A sharded table (the event store and its marts) holds
// each tenant on the tenant's shard; the others are replicated on every node.
type Table struct {
	Database, Name string
	Sharded        bool
}

func (t Table) String() string { return t.Database + "." + t.Name }

// TenantTables lists every table of the Shukei databases with a tenant_id column: new tables
// are covered without changing this code. The audit log is not among them: it is the proof of
// who read which tenant's data and of the deletion itself, a hash chain that a deletion would
// break (promise 8 names it as the one exception).
func (k *Keeper) TenantTables(ctx context.Context) ([]Table, error) {
	// Each system table is read with the databases filtered in its own WHERE, which ClickHouse
	// applies before it opens any table: read unfiltered (a join's WHERE comes after), 18.16
	// opens every table of every database, and one dropped meanwhile by someone else fails the
	// read (code 60). A table dropped between the two reads is left out; one of another
	// database dropped during a read is tried again.
	var out []Table
	err := retryDropped(ctx, func() error {
		out = nil
		views := map[Table]bool{}
		rows, err := k.conn.Query(ctx, "SELECT database, name FROM system.tables WHERE (database = ? OR startsWith(database, ?)) AND engine IN ('View', 'MaterializedView', 'Distributed')", k.db, k.db+"_")
		if err != nil {
			return err
		}
		for rows.Next() {
			var t Table
			if err := rows.Scan(&t.Database, &t.Name); err != nil {
				rows.Close()
				return err
			}
			views[t] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = k.conn.Query(ctx, "SELECT database, table FROM system.columns WHERE (database = ? OR startsWith(database, ?)) AND name = 'tenant_id' AND NOT (database = ? AND table = 'audit_log') ORDER BY database, table",
			k.db, k.db+"_", databases.Audit(k.db))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t Table
			if err := rows.Scan(&t.Database, &t.Name); err != nil {
				return err
			}
			if views[t] {
				continue
			}
			if t.Sharded, err = migrations.Sharded(k.db, t.Database, t.Name); err != nil {
				return err
			}
			out = append(out, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list the tables with tenant rows: %w", err)
	}
	return out, nil
}

// retryDropped runs f again, up to three times, while it fails because a table or database
// it did not ask for was dropped while ClickHouse listed it (codes 60 and 81).
func retryDropped(ctx context.Context, f func() error) error {
	for i := 0; ; i++ {
		err := f()
		var exc *clickhouse.Exception
		if err == nil || i == 3 || !errors.As(err, &exc) || (exc.Code != 60 && exc.Code != 81) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Count is what is left of a tenant in one table.
type Count struct {
	Table Table
	Rows  uint64
}

// Verify counts the tenant's rows in every table, and its pseudonymisation root. On a cluster
// it counts on every replica of every shard: a table's count is the most any replica of a shard
// holds, added up over the shards of a sharded table, so zero means zero on every replica.
func (k *Keeper) Verify(ctx context.Context, tenant string) ([]Count, error) {
	tables, err := k.TenantTables(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Count, 0, len(tables))
	for _, t := range tables {
		c := Count{Table: t}
		for _, s := range k.layout() {
			var most uint64 // the most any replica of the shard holds
			for _, r := range s.Replicas {
				var n uint64
				if err := k.onReplica(ctx, func(ctx context.Context) error {
					return r.QueryRow(ctx, "SELECT count() FROM "+t.String()+" WHERE tenant_id = ?", tenant).Scan(&n)
				}); err != nil {
					return nil, fmt.Errorf("count %s in %s: %w", tenant, t, err)
				}
				most = max(most, n)
			}
			if t.Sharded {
				c.Rows += most
			} else {
				c.Rows = max(c.Rows, most) // every node holds the same table
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// layout is the shards deletions run on: the cluster's, or this server as one shard.
func (k *Keeper) layout() []processor.Shard {
	if len(k.shards) > 0 {
		return k.shards
	}
	return []processor.Shard{{Write: k.conn, Replicas: []driver.Conn{k.conn}}}
}

// onReplica runs f until it succeeds, for at most replicaWait: a replica that is down is
// waited for (a deletion must reach, and be verified on, every replica).
func (k *Keeper) onReplica(ctx context.Context, f func(context.Context) error) error {
	deadline := time.Now().Add(k.replicaWait)
	for {
		// Each attempt is bounded too: a node killed or stopped mid-query must not hold the
		// deletion on a connection that never answers.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if len(k.shards) > 0 {
			actx, cancel = context.WithTimeout(ctx, 30*time.Second)
		}
		err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil || len(k.shards) == 0 || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// deleteTenant deletes the rows of t of every tenant being deleted (marked, markEverywhere):
// on one replica of every shard of a sharded table (the mutation reaches the shard's other
// replicas through replication), once for a table replicated on every node. The statement
// names no tenant (registry.DeletingTenants): ClickHouse 18.16 keeps every mutation's text in
// ZooKeeper, readable by any user.
func (k *Keeper) deleteTenant(ctx context.Context, t Table) error {
	targets := []driver.Conn{k.conn}
	if t.Sharded {
		targets = targets[:0]
		for _, s := range k.layout() {
			targets = append(targets, s.Write)
		}
	}
	for _, c := range targets {
		if err := k.onReplica(ctx, func(ctx context.Context) error {
			return c.Exec(ctx, "ALTER TABLE "+t.String()+" DELETE WHERE "+registry.DeletingTenants(k.db))
		}); err != nil {
			return err
		}
	}
	return nil
}

// unmarkEverywhere removes the marks of ticket and waits until no replica holds them: the
// marks name the deleted tenants, and nothing of a tenant may outlive its deletion's return.
func (k *Keeper) unmarkEverywhere(ctx context.Context, ticket string) error {
	if err := k.reg.Unmark(ctx, ticket); err != nil {
		return err
	}
	return k.onEveryReplica(ctx, "the marks of the deleted tenants gone", func(ctx context.Context, r driver.Conn) (bool, error) {
		n, err := k.reg.Marked(ctx, r, ticket)
		return n == 0, err
	})
}

// markEverywhere marks tenants as being deleted (registry.MarkDeleting) and waits until every
// replica holds the marks: each replica reads its own copy when it applies a deletion's
// mutation, and one without them would delete nothing.
func (k *Keeper) markEverywhere(ctx context.Context, ids []string) (string, error) {
	ticket, err := k.reg.MarkDeleting(ctx, ids)
	if err != nil {
		return "", err
	}
	return ticket, k.onEveryReplica(ctx, "the tenants being deleted marked", func(ctx context.Context, r driver.Conn) (bool, error) {
		n, err := k.reg.Marked(ctx, r, ticket)
		return n >= uint64(len(ids)), err
	})
}

// onEveryReplica waits, for at most replicaWait, until done holds on every replica (a replica
// that is down is waited for, onReplica).
func (k *Keeper) onEveryReplica(ctx context.Context, what string, done func(context.Context, driver.Conn) (bool, error)) error {
	deadline := time.Now().Add(k.replicaWait)
	for _, s := range k.layout() {
		for _, r := range s.Replicas {
			for {
				var ok bool
				if err := k.onReplica(ctx, func(ctx context.Context) error {
					var err error
					ok, err = done(ctx, r)
					return err
				}); err != nil {
					return fmt.Errorf("%s on every replica: %w", what, err)
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("not yet %s on every replica after %s", what, k.replicaWait)
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("waiting until %s on every replica: %w", what, ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
	return nil
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
	ticket, err := k.beginDeletion(ctx, tenant)
	if err != nil {
		return Receipt{}, err
	}
	if err := k.waitCommitWindow(ctx); err != nil {
		return Receipt{}, err
	}
	return k.finishDeletion(ctx, tenant, ticket, why)
}

// beginDeletion marks the tenant as being deleted on every replica, records its tombstone and
// destroys its keys. It returns the mark's ticket, which finishDeletion removes.
func (k *Keeper) beginDeletion(ctx context.Context, tenant string) (string, error) {
	ticket, err := k.markEverywhere(ctx, []string{tenant})
	if err != nil {
		return "", err
	}
	// The tombstone first: from this moment a processor refuses the tenant's events still in
	// Kafka as deleted and keeps nothing of them, instead of keeping them as unknown.
	if k.tombstoneKey != nil {
		stone := decision.TenantTombstone(k.tombstoneKey, tenant)
		if err := k.reg.Tombstone(ctx, stone, time.Now()); err != nil {
			return "", err
		}
		if err := k.tombstoneEverywhere(ctx, stone); err != nil {
			return "", err
		}
	}
	// Keys next: from this moment no pseudonym of the tenant can be made or linked again.
	return ticket, k.reg.DestroyKeys(ctx, tenant)
}

// tombstoneEverywhere waits until every replica holds the tombstone: a processor's fence reads
// the tombstones on whichever node it reaches, and the commit window counts from the moment
// every fence can see it. On one server the insert has made it visible already.
func (k *Keeper) tombstoneEverywhere(ctx context.Context, stone string) error {
	if len(k.shards) == 0 {
		return nil
	}
	return k.onEveryReplica(ctx, "the tombstone reached", func(ctx context.Context, r driver.Conn) (bool, error) {
		var n uint64
		err := r.QueryRow(ctx, "SELECT count() FROM "+databases.Registry(k.db)+".deleted_tenants WHERE tombstone = ?", stone).Scan(&n)
		return n > 0, err
	})
}

// waitCommitWindow waits until every batch a processor decided before the tombstones has been
// stored or abandoned (the processor checks its tenants against the tombstones before each
// packet it sends): deleting before would leave the rows that land afterwards.
//
// Then it waits until no server runs an insert into the Shukei databases that it received
// before the tombstones were visible everywhere (now, when it is called): a writer reads the
// tombstones only once its insert is open on the server (the processor before each packet,
// the aggregator's close once its insert is open), so an insert whose check missed a
// tombstone was opened before it, and ends — written, or dropped by the server with nothing
// kept — before this deletion deletes anything. A writer paused between its check and its
// data, for however long, cannot bring a row afterwards (promise 8).
func (k *Keeper) waitCommitWindow(ctx context.Context) error {
	if k.tombstoneKey == nil {
		return nil
	}
	visible := time.Now()
	if k.commitWindow > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(k.commitWindow):
		}
	}
	return k.awaitInsertsOpenedBefore(ctx, visible)
}

// awaitInsertsOpenedBefore waits, on every replica and for at most replicaWait, until no
// insert into the keeper's databases that the server received before t is running.
func (k *Keeper) awaitInsertsOpenedBefore(ctx context.Context, t time.Time) error {
	q := "SELECT count() FROM system.processes WHERE (startsWith(query, 'INSERT INTO " + k.db + ".') OR startsWith(query, 'INSERT INTO " + k.db + "_')) AND elapsed >= ?"
	return k.onEveryReplica(ctx, "the inserts opened before the tombstones ended", func(ctx context.Context, r driver.Conn) (bool, error) {
		// A second's margin for the clocks and the rounding: an insert opened just after t
		// is waited for too, which is safe.
		since := max(0, time.Since(t).Seconds()-1)
		var n uint64
		err := r.QueryRow(ctx, q, since).Scan(&n)
		return n == 0, err
	})
}

// finishDeletion deletes every row of the tenant, waits for ClickHouse, verifies nothing is
// left and writes the receipt.
func (k *Keeper) finishDeletion(ctx context.Context, tenant, ticket, why string) (Receipt, error) {
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
		if err := k.deleteTenant(ctx, c.Table); err != nil {
			return r, fmt.Errorf("delete %s from %s: %w", tenant, c.Table, err)
		}
	}
	if err := k.deleted(ctx, touched, func() ([]Count, error) { return k.Verify(ctx, tenant) }); err != nil {
		return r, fmt.Errorf("after deletion of %s: %w", tenant, err)
	}
	rec, err := k.audit.Append(ctx, audit.Record{
		Principal: "retention", Kind: "system", Report: "tenant_deletion", Decision: "deleted", Rows: r.Rows,
		Reason: fmt.Sprintf("tenant %s deleted (%s): %d rows in %d tables; pseudonymisation root destroyed", tenant, why, r.Rows, r.Tables),
	})
	if err != nil {
		return r, fmt.Errorf("the deletion of %s is done but its receipt could not be written: %w", tenant, err)
	}
	r.AuditSeq = rec.Seq
	// Verified on every replica: the mark goes (its removal names only the ticket).
	if err := k.unmarkEverywhere(ctx, ticket); err != nil {
		return r, err
	}
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
	// Find every deleted tenant's rows first, mark those tenants once, then delete in each
	// table that holds some: one mark and one wait on every replica for the whole sweep.
	swept := map[Table]uint64{}
	var touched []Table
	var deleted []string
	for _, t := range tables {
		// A sharded table is read on every shard (each holds its own tenants), a table
		// replicated on every node once.
		readers := []driver.Conn{k.conn}
		if t.Sharded {
			readers = readers[:0]
			for _, s := range k.layout() {
				readers = append(readers, s.Write)
			}
		}
		var n uint64
		for _, c := range readers {
			found, rows, err := k.deletedTenants(ctx, c, t, gone)
			if err != nil {
				return nil, err
			}
			for _, id := range found {
				if !slices.Contains(deleted, id) {
					deleted = append(deleted, id)
				}
			}
			n += rows
		}
		if n > 0 {
			swept[t] = n
			touched = append(touched, t)
		}
	}
	if len(touched) == 0 {
		return swept, nil
	}
	ticket, err := k.markEverywhere(ctx, deleted)
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	for _, t := range touched {
		if err := k.deleteTenant(ctx, t); err != nil {
			return nil, fmt.Errorf("sweep a deleted tenant from %s: %w", t, err)
		}
	}
	if len(k.shards) == 0 {
		if err := k.waitMutations(ctx, touched); err != nil {
			return swept, err
		}
	} else if err := k.deleted(ctx, touched, func() ([]Count, error) { return k.leftOf(ctx, touched, gone) }); err != nil {
		return swept, fmt.Errorf("sweep: %w", err)
	}
	if err := k.unmarkEverywhere(ctx, ticket); err != nil {
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

// deletedTenants returns the tenants of table t on c whose tombstone is in gone, and how many
// rows they have there.
func (k *Keeper) deletedTenants(ctx context.Context, c driver.Conn, t Table, gone map[string]bool) ([]string, uint64, error) {
	var deleted []string
	var n uint64
	err := k.onReplica(ctx, func(ctx context.Context) error {
		deleted, n = nil, 0
		rows, err := c.Query(ctx, "SELECT tenant_id, count() FROM "+t.String()+" GROUP BY tenant_id")
		if err != nil {
			return fmt.Errorf("tenants of %s: %w", t, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var c uint64
			if err := rows.Scan(&id, &c); err != nil {
				return err
			}
			if id != "" && gone[decision.TenantTombstone(k.tombstoneKey, id)] {
				deleted = append(deleted, id)
				n += c
			}
		}
		return rows.Err()
	})
	return deleted, n, err
}

// deleted waits until the deletions in tables are done and then requires left to find nothing.
// On one server it waits for the tables' mutations, then counts once. On a cluster it counts on
// every replica (left) until nothing is left, for at most replicaWait: the rows are what
// matters, and ClickHouse 18.16 can leave a replica restarted during a mutation reporting it
// not done (system.mutations: parts_to_do > 0) after its rows are gone.
func (k *Keeper) deleted(ctx context.Context, tables []Table, left func() ([]Count, error)) error {
	if len(k.shards) == 0 {
		if err := k.waitMutations(ctx, tables); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(k.replicaWait)
	for {
		counts, err := left()
		if err != nil {
			return err
		}
		var still []string
		for _, c := range counts {
			if c.Rows > 0 {
				still = append(still, fmt.Sprintf("%s holds %d rows", c.Table, c.Rows))
			}
		}
		if len(still) == 0 {
			return nil
		}
		if len(k.shards) == 0 || time.Now().After(deadline) {
			return fmt.Errorf("%s", strings.Join(still, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leftOf counts, on every replica, the rows of deleted tenants (by tombstone, gone) in tables:
// the most any replica of a shard holds, summed over the shards of a sharded table.
func (k *Keeper) leftOf(ctx context.Context, tables []Table, gone map[string]bool) ([]Count, error) {
	var out []Count
	for _, t := range tables {
		c := Count{Table: t}
		for _, s := range k.layout() {
			var most uint64
			for _, r := range s.Replicas {
				_, n, err := k.deletedTenants(ctx, r, t, gone)
				if err != nil {
					return nil, err
				}
				most = max(most, n)
			}
			if t.Sharded {
				c.Rows += most
			} else {
				c.Rows = max(c.Rows, most)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// waitMutations waits until ClickHouse has applied every pending mutation of tables on every
// replica (used on one server: a cluster's deletions are judged by their rows, deleted).
func (k *Keeper) waitMutations(ctx context.Context, tables []Table) error {
	for _, t := range tables {
		for _, s := range k.layout() {
			for _, r := range s.Replicas {
				if err := mutationsDone(ctx, r, t.String()); err != nil {
					return err
				}
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
		sharded, err := migrations.Sharded(k.db, db, name)
		if err != nil {
			return out, err
		}
		// A sharded table's partitions are dropped on one replica of each shard (the drop is
		// replicated within the shard); a table on every node, once.
		targets := []driver.Conn{k.conn}
		if sharded {
			targets = targets[:0]
			for _, s := range k.layout() {
				targets = append(targets, s.Write)
			}
		}
		cutoff := now.Add(-keep)
		for _, c := range targets {
			parts, err := activePartitions(ctx, c, db, name)
			if err != nil {
				return out, err
			}
			for _, p := range parts {
				ym, err := strconv.Atoi(p)
				if err != nil || ym < 190001 {
					continue // not a YYYYMM partition
				}
				monthEnd := time.Date(ym/100, time.Month(ym%100), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
				if !monthEnd.After(cutoff) {
					if err := c.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+strconv.Itoa(ym)); err != nil {
						return out, fmt.Errorf("drop partition %d of %s: %w", ym, table, err)
					}
					if !slices.Contains(out, Dropped{Table: table, Partition: p}) {
						out = append(out, Dropped{Table: table, Partition: p})
					}
				}
			}
		}
	}
	return out, nil
}

// activePartitions lists the partitions of database.table that hold active parts on c.
func activePartitions(ctx context.Context, c driver.Conn, database, table string) ([]string, error) {
	rows, err := c.Query(ctx, "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active", database, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		parts = append(parts, p)
	}
	return parts, rows.Err()
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
	tickets := make([]string, len(due))
	for i, t := range due {
		if tickets[i], err = k.beginDeletion(ctx, t.ID); err != nil {
			return rep, err
		}
	}
	if len(due) > 0 {
		if err := k.waitCommitWindow(ctx); err != nil {
			return rep, err
		}
	}
	for i, t := range due {
		why := fmt.Sprintf("contract ended %s, retention %s", t.ContractEnd.Format("2006-01-02"), k.policy.AfterContractEnd)
		r, err := k.finishDeletion(ctx, t.ID, tickets[i], why)
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
