package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
)

// demoReset gives the demo an empty sandbox: it drops the configured database and its purpose
// databases (nothing else: other databases with the same prefix, such as the benchmarks', stay)
// and deletes the raw and DLQ topics, waiting until the broker has forgotten them. A second
// 'make demo' then tells the same story as the first, instead of replaying days an earlier run
// already closed and released.
func demoReset(ctx context.Context, out io.Writer, cfg config.Config) error {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	var dropped []string
	for _, suffix := range append([]string{""}, migrations.DatabaseSuffixes()...) {
		name := cfg.ClickHouse.Database + suffix
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", name).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		if err := conn.Exec(ctx, "DROP DATABASE "+name); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
		dropped = append(dropped, name)
	}
	if err := topic.Reachable(ctx, cfg.Kafka.Brokers, cfg.Kafka.DialTimeout); err != nil {
		return fmt.Errorf("%w (is it running? scripts/services.sh up)", err)
	}
	// The release log too: it decides which windows of the demo's database were released; and
	// the audit log's sequencer, whose records of the database a new chain would take up again.
	topics := []string{cfg.Kafka.RawTopic, cfg.Kafka.DLQTopic, topic.ReleaseSpec(cfg.Kafka).Name, topic.AuditSpec(cfg).Name}
	if err := topic.Delete(ctx, cfg.Kafka.Brokers, topics...); err != nil {
		return err
	}
	if err := topic.WaitGone(ctx, cfg.Kafka.Brokers, topics, time.Minute); err != nil {
		return err
	}
	what := "nothing to drop"
	if len(dropped) > 0 {
		what = "dropped " + strings.Join(dropped, ", ")
	}
	fmt.Fprintf(out, "\n-- Fresh start (--fresh): %s; topics %s deleted\n", what, strings.Join(topics, ", "))
	return nil
}
