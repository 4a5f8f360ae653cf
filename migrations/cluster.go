package migrations

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/databases"
)

// Layout says where a migration's DDL runs: on one server (Cluster empty), or on every node of
// the ClickHouse cluster named Cluster (remote_servers), whose nodes define the macros {shard}
// and {replica}.
//
// On a cluster every stored table is replicated (ReplicatedMergeTree and its Replacing and
// Aggregating variants), in one of two ways:
//
//   - sharded: the event store and the purpose marts, whose rows belong to one tenant each.
//     Each shard holds its own tenants (a tenant's events, marts, deletion and per-tenant
//     reports stay on one shard), replicated within the shard: ZooKeeper path per {shard}. The
//     marts' materialised views run on each node over the rows that node's events table gets.
//   - everywhere: the registry, keys, principals, the audit log, the aggregator's state and
//     releases, rejections and checkpoints: small tables every role reads whole. One ZooKeeper
//     path for the cluster, every node a replica ({shard}-{replica}), so any node answers.
//
// Statements are rewritten, never the migration files: one history serves both layouts, and a
// statement of a kind the rewrite does not know is an error, not a silent single-node DDL.
//
// Migrations connect to every node themselves (Nodes) and run each statement where it belongs
// (Step.On), never ON CLUSTER: the servers have no distributed DDL queue, whose worker runs
// what it is given without the sender's restrictions (on ClickHouse 18.16 a user that may run
// DDL in its own database would copy any other with CREATE TABLE … ON CLUSTER … AS SELECT).
type Layout struct {
	Cluster string
	// Nodes are connections to every node of the cluster, in shard order (NodesOf).
	Nodes []Node
}

// Target says on which nodes of a cluster a step runs.
type Target int

const (
	// Everywhere: on every node, each for itself (databases, tables, views, renames, drops:
	// ClickHouse replicates none of them).
	Everywhere Target = iota
	// PerShard: on one replica of each shard, the shard's other replicas following through
	// ZooKeeper (an ALTER of a sharded table).
	PerShard
	// Once: on one node, the cluster's other replicas following (an ALTER of a table
	// replicated on every node), or a backfill.
	Once
)

// shardKeys are the tables kept per shard, as tableKey names them: the event store and every
// table a materialised view over it fills (the view runs on each node over the rows that node's
// events table gets, so its table must live on the same shard). Derived from the migrations, so
// a new mart is sharded without a second list to keep (TestTheLayoutOfEveryTable pins today's).
var shardKeys = sync.OnceValues(func() (map[string]bool, error) {
	const db = "db"
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{".events": true}
	for _, m := range migs {
		for _, stmt := range m.Statements(db) {
			if v := viewOverEvents.FindStringSubmatch(stmt); v != nil {
				keys[tableKey(db, v[1], v[2])] = true
			}
		}
	}
	return keys, nil
})

var viewOverEvents = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW IF NOT EXISTS \S+ TO ([a-z0-9_]+)\.([a-z0-9_]+) AS\s.*\bFROM\s+db\.events\b`)

var (
	createDatabase = regexp.MustCompile(`^CREATE DATABASE IF NOT EXISTS ([a-z0-9_]+)$`)
	createTable    = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS ([a-z0-9_]+)\.([a-z0-9_]+) (\(.*)$`)
	engine         = regexp.MustCompile(`\bENGINE = (MergeTree|ReplacingMergeTree|AggregatingMergeTree)(\(([^()]*)\))?`)
	createView     = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW IF NOT EXISTS ([a-z0-9_]+\.[a-z0-9_]+) (TO .*)$`)
	alterTable     = regexp.MustCompile(`(?s)^ALTER TABLE ([a-z0-9_]+)\.([a-z0-9_]+) (.*)$`)
	dropTable      = regexp.MustCompile(`^DROP TABLE IF EXISTS ([a-z0-9_]+)\.([a-z0-9_]+)$`)
	columnChange   = regexp.MustCompile(`^(ADD|DROP|MODIFY|COMMENT) COLUMN\b`)
	insertSelect   = regexp.MustCompile(`(?s)^INSERT INTO [a-z0-9_]+\.[a-z0-9_]+ \(.*\)\s+SELECT\s.*\sFROM\s+([a-z0-9_]+\.[a-z0-9_]+)\s`)
)

// Step is one statement as it runs under a layout.
type Step struct {
	SQL string
	On  Target
	// Backfill names the table an INSERT … SELECT reads. On a cluster it runs on one node
	// only, so Apply runs it only while that table is empty on every shard (a new cluster
	// migrates before it stores anything).
	Backfill string
	// After are statements run right after SQL, on every node: on a cluster, the Distributed
	// table beside a sharded table (databases.Across), created, altered and dropped with it.
	After []string
}

// tableKey is a table's name without the migration's ${db} prefix: "_marketing.activity_daily"
// for db "shukei" and "shukei_marketing.activity_daily".
func tableKey(db, database, table string) string {
	return strings.TrimPrefix(database, db) + "." + table
}

// Rewrite returns stmt (with ${db} already replaced by db) as it runs under l.
func (l Layout) Rewrite(db, stmt string) (Step, error) {
	if l.Cluster == "" {
		return Step{SQL: stmt}, nil
	}
	stmt = strings.TrimSpace(stmt)
	sharded, err := shardKeys()
	if err != nil {
		return Step{}, err
	}
	switch {
	case createDatabase.MatchString(stmt):
		return Step{SQL: stmt}, nil
	case createTable.MatchString(stmt):
		m := createTable.FindStringSubmatch(stmt)
		database, table, body := m[1], m[2], m[3]
		var path, replica string
		if sharded[tableKey(db, database, table)] {
			path, replica = "/clickhouse/shukei/tables/{shard}/"+database+"."+table, "{replica}"
		} else {
			path, replica = "/clickhouse/shukei/tables/all/"+database+"."+table, "{shard}-{replica}"
		}
		locs := engine.FindAllStringSubmatchIndex(body, -1)
		if len(locs) != 1 {
			return Step{}, fmt.Errorf("CREATE TABLE %s.%s: want one ENGINE = (Replacing|Aggregating)MergeTree, found %d", database, table, len(locs))
		}
		e := engine.FindStringSubmatch(body)
		args := "'" + path + "', '" + replica + "'"
		if extra := strings.TrimSpace(e[3]); extra != "" {
			args += ", " + extra
		}
		body = body[:locs[0][0]] + "ENGINE = Replicated" + e[1] + "(" + args + ")" + body[locs[0][1]:]
		step := Step{SQL: "CREATE TABLE IF NOT EXISTS " + database + "." + table + " " + body}
		if sharded[tableKey(db, database, table)] {
			// Readers query every shard through it. No sharding key: nothing writes through
			// it (an insert into it fails), the processor writes each shard's own table.
			step.After = []string{"CREATE TABLE IF NOT EXISTS " + database + "." + table + databases.AllShards +
				" AS " + database + "." + table + " ENGINE = Distributed(" + l.Cluster + ", " + database + ", " + table + ")"}
		}
		return step, nil
	case createView.MatchString(stmt):
		return Step{SQL: stmt}, nil
	case alterTable.MatchString(stmt):
		m := alterTable.FindStringSubmatch(stmt)
		if sharded[tableKey(db, m[1], m[2])] {
			// One replica of each shard runs it; the shard's other replica follows through
			// ZooKeeper.
			step := Step{SQL: stmt, On: PerShard}
			if columnChange.MatchString(m[3]) {
				step.After = []string{"ALTER TABLE " + m[1] + "." + m[2] + databases.AllShards + " " + m[3]}
			}
			return step, nil
		}
		// A table replicated everywhere is one table in ZooKeeper: altered on one node, the
		// change reaches every replica.
		return Step{SQL: stmt, On: Once}, nil
	case renameStmt.MatchString(stmt):
		if m := renameStmt.FindStringSubmatch(stmt); sharded[tableKey(db, m[1], m[2])] {
			return Step{}, fmt.Errorf("renaming the sharded table %s.%s has no cluster form (its Distributed table and views name it)", m[1], m[2])
		}
		return Step{SQL: stmt}, nil
	case dropTable.MatchString(stmt):
		step := Step{SQL: stmt}
		if m := dropTable.FindStringSubmatch(stmt); sharded[tableKey(db, m[1], m[2])] {
			step.After = []string{"DROP TABLE IF EXISTS " + m[1] + "." + m[2] + databases.AllShards}
		}
		return step, nil
	case insertSelect.MatchString(stmt):
		return Step{SQL: stmt, On: Once, Backfill: insertSelect.FindStringSubmatch(stmt)[1]}, nil
	}
	first := stmt
	if i := strings.IndexByte(first, '\n'); i >= 0 {
		first = first[:i]
	}
	return Step{}, fmt.Errorf("no cluster form for the statement %q", first)
}

// targets are the nodes a step run on: every node, the first node of each shard, or the first.
func (l Layout) targets(on Target) []Node {
	switch on {
	case Once:
		return l.Nodes[:1]
	case PerShard:
		var out []Node
		for i, n := range l.Nodes {
			if i == 0 || n.Shard != l.Nodes[i-1].Shard {
				out = append(out, n)
			}
		}
		return out
	}
	return l.Nodes
}

// Sharded says whether database.table (of the Shukei database db) is kept per shard on a
// cluster: the event store and the tables its views fill. Everything else is replicated on
// every node.
func Sharded(db, database, table string) (bool, error) {
	keys, err := shardKeys()
	if err != nil {
		return false, err
	}
	return keys[tableKey(db, database, table)], nil
}

// ShardedDatabases are the databases of the Shukei database prefix db that hold sharded
// tables on a cluster (the event store's and the purpose marts'), sorted.
func ShardedDatabases(db string) ([]string, error) {
	keys, err := shardKeys()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for k := range keys {
		d := db + k[:strings.IndexByte(k, '.')]
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Node is one node of a cluster, connected.
type Node struct {
	Name  string // host:port
	Shard uint32 // its shard_num
	Conn  driver.Conn
}

// NodesOf connects to every node of cluster as system.clusters lists it on conn (in shard and
// replica order), through open (which is given host:port and connects as the administrator
// does). On error it closes what it opened.
func NodesOf(ctx context.Context, conn driver.Conn, cluster string, open func(addr string) (driver.Conn, error)) ([]Node, error) {
	rows, err := conn.Query(ctx, "SELECT host_address, port, shard_num FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cluster)
	if err != nil {
		return nil, fmt.Errorf("the nodes of cluster %s: %w", cluster, err)
	}
	var nodes []Node
	for rows.Next() {
		var host string
		var port uint16
		var n Node
		if err := rows.Scan(&host, &port, &n.Shard); err != nil {
			rows.Close()
			return nil, err
		}
		n.Name = net.JoinHostPort(host, strconv.Itoa(int(port)))
		nodes = append(nodes, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("the server knows no cluster %q (remote_servers)", cluster)
	}
	for i := range nodes {
		c, err := open(nodes[i].Name)
		if err != nil {
			CloseNodes(nodes[:i])
			return nil, fmt.Errorf("connect to %s of cluster %s (every node must be up): %w", nodes[i].Name, cluster, err)
		}
		nodes[i].Conn = c
	}
	return nodes, nil
}

// CloseNodes closes the nodes' connections.
func CloseNodes(nodes []Node) {
	for _, n := range nodes {
		if n.Conn != nil {
			_ = n.Conn.Close()
		}
	}
}

// Complete creates on each node the databases and tables of db that the node conn reaches has
// and it lacks, from their definitions there (SHOW CREATE, macros unexpanded): a node that joins
// the cluster — a new shard's, or one rebuilt empty — gets Shukei's schema, which the migration
// history (replicated, so already recorded) would not give it. A replicated table created so
// registers a new replica and fetches its parts: a new shard's sharded tables start empty (its
// own ZooKeeper path), the tables replicated on every node arrive whole. Stored tables are
// created first, then the Distributed tables, then the materialised views (which name both).
// It returns what it created, "node: db.table".
func Complete(ctx context.Context, conn driver.Conn, db string, nodes []Node) ([]string, error) {
	type table struct{ database, name, engine, create string }
	list := func(c driver.Conn) (map[string]table, error) {
		rows, err := c.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE database = ? OR startsWith(database, ?)", db, db+"_")
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := map[string]table{}
		for rows.Next() {
			var t table
			if err := rows.Scan(&t.database, &t.name, &t.engine); err != nil {
				return nil, err
			}
			out[t.database+"."+t.name] = t
		}
		return out, rows.Err()
	}
	ref, err := list(conn)
	if err != nil {
		return nil, fmt.Errorf("the tables of %s: %w", db, err)
	}
	rank := func(engine string) int {
		switch engine {
		case "MaterializedView", "View":
			return 2
		case "Distributed":
			return 1
		}
		return 0
	}
	var names []string
	for n := range ref {
		names = append(names, n)
	}
	sortTables(names, func(n string) int { return rank(ref[n].engine) })
	var created []string
	for _, node := range nodes {
		have, err := list(node.Conn)
		if err != nil {
			return created, fmt.Errorf("the tables of %s on %s: %w", db, node.Name, err)
		}
		for _, n := range names {
			if _, ok := have[n]; ok {
				continue
			}
			t := ref[n]
			if t.create == "" {
				if err := conn.QueryRow(ctx, "SHOW CREATE TABLE "+n).Scan(&t.create); err != nil {
					return created, fmt.Errorf("the definition of %s: %w", n, err)
				}
				ref[n] = t
			}
			if err := node.Conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+t.database); err != nil {
				return created, fmt.Errorf("%s: create database %s: %w", node.Name, t.database, err)
			}
			if err := node.Conn.Exec(ctx, t.create); err != nil {
				return created, fmt.Errorf("%s: create %s: %w", node.Name, n, err)
			}
			created = append(created, node.Name+": "+n)
		}
	}
	return created, nil
}

// sortTables orders names by rank, then by name.
func sortTables(names []string, rank func(string) int) {
	slices.SortFunc(names, func(a, b string) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
}
