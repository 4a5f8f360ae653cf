package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
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
			return migrate(cmd.Context(), cmd.OutOrStdout(), a.cfg)
		},
	}
}

func migrate(ctx context.Context, out io.Writer, cfg config.Config) error {
	c := cfg.ClickHouse
	conn, err := clickhouse.Open(c.Options())
	if err != nil {
		return fmt.Errorf("connect to ClickHouse at %v: %w", c.Addr, err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ClickHouse at %v does not answer (is it running? scripts/services.sh up): %w", c.Addr, err)
	}
	res, err := migrations.Apply(ctx, conn, c.Database)
	for _, m := range res.Applied {
		fmt.Fprintf(out, "applied  %04d_%s\n", m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "database %s is at migration %d (%d applied now, %d already)\n",
		c.Database, len(res.Applied)+len(res.Skipped), len(res.Applied), len(res.Skipped))
	return writeReaders(out, cfg)
}

// writeReaders declares every role's users in the server's users.d (or prints the file):
// the matrix of promise 16, passwords derived from the users key.
func writeReaders(out io.Writer, cfg config.Config) error {
	uk, err := ops.UsersKey(cfg)
	if err != nil {
		return fmt.Errorf("the roles' passwords derive from the users key: %w", err)
	}
	if uk == nil {
		return fmt.Errorf("the roles' passwords derive from the users key: set clickhouse.users_key_file (or anonymizer.master_key_file)")
	}
	// Grafana reads the query service's reports as a principal of its own (promise 10),
	// never ClickHouse, whose system tables any user may read.
	users := migrations.AllUsers(cfg.ClickHouse.Database, uk)
	if cfg.ClickHouse.UsersDir == "" {
		b, err := migrations.UsersFile(users, cfg.ClickHouse.ReaderNetworks)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "clickhouse.users_dir is not set: install this as users.d/%s on the server\n%s", migrations.UsersFileName(cfg.ClickHouse.Database), b)
		return nil
	}
	path, err := migrations.WriteUsers(cfg.ClickHouse.UsersDir, cfg.ClickHouse.Database, users, cfg.ClickHouse.ReaderNetworks)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "role users: %d ClickHouse users of %d roles (purpose readers included), each allowed only its databases, in %s\n", len(users), len(migrations.Roles), path)
	return nil
}

func newTopicsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "topics",
		Short: "Create the Kafka topics (usage.raw, usage.dlq) with the configured partitions and retention",
		Long: `topics creates the raw and DLQ topics, the release log and the audit log's sequencer
(audit.topic, one partition) if they are missing, with the partition counts,
replication factor and retention from the configuration, and checks existing ones. It never adds
partitions to an existing topic: that would move tenants between partitions while consumers run.

Retention is enforced: each topic gets retention.ms from kafka.raw_retention (the longest time a
raw user id can exist anywhere in Shukei) or kafka.dlq_retention, and a segment.ms of at most an
hour (Kafka deletes records a whole segment at a time, so a record can outlive retention.ms by
segment.ms). An existing topic whose settings differ, or that only inherits the broker's
default, is set to them (its other settings are left alone) and the change is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ensureTopics(cmd.Context(), cmd.OutOrStdout(), a.cfg.Kafka, topic.AuditSpec(a.cfg))
		},
	}
}

// ensureTopics creates the topics of k and the extra ones (the audit log's sequencer).
func ensureTopics(ctx context.Context, out io.Writer, k config.Kafka, extra ...topic.Spec) error {
	if err := topic.Reachable(ctx, k.Brokers, k.DialTimeout); err != nil {
		return fmt.Errorf("%w (is it running? scripts/services.sh up)", err)
	}
	st, err := topic.Ensure(ctx, k.Brokers, append(topic.Specs(k), extra...))
	for _, s := range st {
		verb := "exists "
		if s.Created {
			verb = "created"
		}
		fmt.Fprintf(out, "%s  %s (%d partitions)", verb, s.Name, s.Partitions)
		if v, ok := s.Config[topic.RetentionMs]; ok {
			fmt.Fprintf(out, ", retention.ms %s (%s)", v, millisText(v))
		}
		fmt.Fprintln(out)
		for _, c := range s.Changed {
			fmt.Fprintf(out, "         %s: set %s (it differed from the configuration)\n", s.Name, c)
		}
	}
	return err
}

// millisText renders a *.ms setting as a duration.
func millisText(v string) string {
	d, err := topic.Millis(v)
	switch {
	case err != nil:
		return "?"
	case d < 0:
		return "unbounded"
	}
	return d.String()
}
