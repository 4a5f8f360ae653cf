// Package databases names Shukei's ClickHouse databases. ClickHouse 18.16 grants a user whole
// databases, never single tables, so the tables are split by who may touch them (docs/promises.md,
// promise 16): each role's users are allowed only the databases their job needs, and a table
// lives in the database of the roles that write it. Every table name in Shukei's Go code is
// built from these functions and the prefix `clickhouse.database`.
package databases

import "strings"

// Store is the event store: events and rejections (written by the processor) and the
// migrations' own bookkeeping.
func Store(db string) string { return db }

// Registry holds the tenants, their tokens and statuses, consents, policy activations, deleted
// tenants and support tickets (written by the administrator's commands, read by every role).
func Registry(db string) string { return db + "_registry" }

// Keys holds the tenants' pseudonymisation roots, wrapped by the master key (read by the
// processor and the aggregator).
func Keys(db string) string { return db + "_keys" }

// Principals holds the query service's principals (written only by the administrator).
func Principals(db string) string { return db + "_principals" }

// Audit holds the audit log (appended by the query service and retention, deleted by no one).
func Audit(db string) string { return db + "_audit" }

// BreakGlass holds the break-glass grants and their actions (written by the query service;
// retention deletes a deleted tenant's).
func BreakGlass(db string) string { return db + "_breakglass" }

// Aggregator holds the aggregator's open windows and progress (aggregate_state).
func Aggregator(db string) string { return db + "_aggregator" }

// Marts are the purposes whose databases the event store's views fill (every purpose but
// external_aggregate, whose database holds the releases and the ledger).
var Marts = []string{"support", "service_improvement", "marketing", "follow_up", "interview_selection", "external_consented"}

// Purpose is the database of one purpose's marts (`<db>_<purpose>`).
func Purpose(db, purpose string) string { return db + "_" + purpose }

// Internal returns the databases besides the store and the purposes' that hold Shukei's
// own tables, in the order they were split from the store.
func Internal(db string) []string {
	return []string{Registry(db), Keys(db), Principals(db), Audit(db), BreakGlass(db), Aggregator(db)}
}

// AllShards is the suffix of the Distributed table that a cluster (clickhouse.cluster) has
// beside each sharded table: the event store and the purpose marts, whose rows are kept on
// their tenant's shard.
const AllShards = "_all"

// Across names the table a reader queries for table (database-qualified, one of the event
// store's or the purpose marts'): on one server (cluster empty) the table itself; on a cluster
// its Distributed table, which reads every shard (one replica each). Writers and deletions
// name the shard's own table, never this one.
func Across(cluster, table string) string {
	if cluster == "" {
		return table
	}
	return table + AllShards
}

// Literal renders s as a ClickHouse string literal, its quotes and backslashes escaped: for
// the few values that must be written into a statement (an IN list, which ClickHouse 18.16
// will not take as a bound slice) rather than bound.
func Literal(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
