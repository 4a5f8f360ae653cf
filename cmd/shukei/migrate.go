package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
)

func newMigrateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema (numbered, idempotent migrations)",
		Long: `migrate applies the DDL in migrations/ (embedded in the binary) to the configured
ClickHouse server: the internal database and one database per purpose. Each migration is
recorded in <database>.schema_migrations with its checksum; applied ones are skipped, and an
applied migration whose file was later edited is refused. Safe to run any number of times.

It also declares every role's ClickHouse users (promise 16; 'shukei users list' shows the
matrix): each allowed only the databases its job needs, read-only where it only reads, and one
read-only user per purpose for the query service. With clickhouse.users_dir set it writes
<database>-users.xml there (the server loads it within seconds); otherwise it prints the file
for you to install. Passwords derive from clickhouse.users_key_file (else the master key).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.Migrate(cmd.Context(), cmd.OutOrStdout(), a.cfg)
		},
	}
}

func newTopicsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "topics",
		Short: "Create the Kafka topics (usage.raw, usage.dlq) with the configured partitions and retention",
		Long: `topics creates the raw and DLQ topics, the release log and the audit log's sequencer
(audit.topic, one partition) if they are missing, with the partition counts,
replication factor and retention from the configuration, and checks existing ones. It never adds
partitions to an existing topic: that moves tenants between partitions, so an operator does it
with Kafka's tools (docs/CLUSTER.md, Operations).

Retention is enforced: each topic gets retention.ms from kafka.raw_retention (the longest time a
raw user id can exist anywhere in Shukei) or kafka.dlq_retention, and a segment.ms of at most an
hour (Kafka deletes records a whole segment at a time, so a record can outlive retention.ms by
segment.ms). An existing topic whose settings differ, or that only inherits the broker's
default, is set to them (its other settings are left alone) and the change is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return topic.EnsurePrinted(cmd.Context(), cmd.OutOrStdout(), a.cfg.Kafka, topic.AuditSpec(a.cfg))
		},
	}
}
