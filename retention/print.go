package retention

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
)

// AsOf is a Role's At for the time s (RFC 3339; 'shukei retention run --now'), or nil for now
// when s is "". A bad s fails every run.
func AsOf(s string) func() (time.Time, error) {
	if s == "" {
		return nil
	}
	return func() (time.Time, error) {
		now, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return now, fmt.Errorf("--now %q: want RFC 3339", s)
		}
		return now, nil
	}
}

// WriteReport writes what a run did ('shukei retention run'), a line a deleted tenant, dropped
// partition and expired window, or "nothing due".
func WriteReport(out io.Writer, rep Report) {
	for _, r := range rep.Deleted {
		fmt.Fprintf(out, "deleted tenant %s: %d rows in %d tables, pseudonymisation root destroyed (audit record #%d)\n", r.Tenant, r.Rows, r.Tables, r.AuditSeq)
	}
	for t, n := range rep.Swept {
		fmt.Fprintf(out, "swept %d rows of deleted tenants from %s (they arrived after the deletion)\n", n, t)
	}
	for _, d := range rep.Dropped {
		fmt.Fprintf(out, "dropped partition %s of %s\n", d.Partition, d.Table)
	}
	for _, w := range rep.State.Windows {
		fmt.Fprintf(out, "deleted %d partial aggregates of window %s/%s (plan %s, released %s)\n",
			w.Partials, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339), w.Plan, w.ReleasedAt.UTC().Format(time.RFC3339))
	}
	if rep.State.Progress > 0 {
		fmt.Fprintf(out, "deleted %d superseded aggregator progress rows (the latest of each partition is kept)\n", rep.State.Progress)
	}
	if rep.State.Deleted() > 0 {
		fmt.Fprintf(out, "aggregate_state: %d rows deleted, of windows released at or before %s\n", rep.State.Deleted(), rep.State.Cutoff.Format(time.RFC3339))
	}
	if rep.Nothing() {
		fmt.Fprintln(out, "nothing due")
	}
}

// DeleteTenantTo deletes tenant now ('shukei tenants delete'): the keeper of the configured
// database, on a connection of its own, deletes it (DeleteTenant) and the receipt is written
// to w. Finding no row of the tenant is an error, once the deletion and its receipt are done.
func DeleteTenantTo(ctx context.Context, w io.Writer, cfg config.Config, log *slog.Logger, tenant, why string) error {
	return ops.WithClickHouse(ctx, cfg.ClickHouse, func(conn driver.Conn) error {
		k, done, err := newKeeper(ctx, cfg, conn, conn, log)
		if err != nil {
			return err
		}
		defer done()
		rec, err := k.DeleteTenant(ctx, tenant, why)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "deleted %s: %d rows in %d tables, pseudonymisation root destroyed; audit record %d\n", rec.Tenant, rec.Rows, rec.Tables, rec.AuditSeq)
		if rec.Rows == 0 {
			return fmt.Errorf("no row of tenant %q was found (an unknown id, or one already deleted); its tombstone is recorded all the same", tenant)
		}
		return nil
	})
}

// VerifyTenantTo writes what is left of tenant ('shukei retention verify'): its rows in every
// table of the configured database, on a connection of its own (Keeper.VerifyTo), then until
// when the Kafka topics hold its records (HorizonsTo).
func VerifyTenantTo(ctx context.Context, w io.Writer, cfg config.Config, log *slog.Logger, tenant string) error {
	err := ops.WithClickHouse(ctx, cfg.ClickHouse, func(conn driver.Conn) error {
		k, done, err := newKeeper(ctx, cfg, conn, conn, log)
		if err != nil {
			return err
		}
		defer done()
		return k.VerifyTo(ctx, w, tenant)
	})
	if err != nil {
		return err
	}
	return HorizonsTo(ctx, w, cfg.Kafka, tenant)
}

// VerifyTo counts what is left of tenant in every table (Verify) and writes the counts, a
// line a table and their total ('shukei retention verify').
func (k *Keeper) VerifyTo(ctx context.Context, out io.Writer, tenant string) error {
	counts, err := k.Verify(ctx, tenant)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	var total uint64
	for _, c := range counts {
		fmt.Fprintf(tw, "%s\t%d\t\n", c.Table, c.Rows)
		total += c.Rows
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "%d rows of %s left in %d tables\n", total, tenant, len(counts))
	return nil
}

// HorizonsTo reads until when the Kafka topics of k still hold tenant's records
// (TopicHorizons) and writes them (WriteHorizons); unreachable brokers leave them unknown.
func HorizonsTo(ctx context.Context, out io.Writer, k config.Kafka, tenant string) error {
	if err := topic.Reachable(ctx, k.Brokers, k.DialTimeout); err != nil {
		return fmt.Errorf("the Kafka topics' horizon of %s is unknown: %w", tenant, err)
	}
	hs, err := TopicHorizons(ctx, k, tenant)
	WriteHorizons(out, tenant, hs, time.Now().UTC())
	return err
}

// WriteHorizons says, per topic, until when Kafka still holds the tenant's records (hs, from
// TopicHorizons), and at the latest anything written up to now.
func WriteHorizons(out io.Writer, tenant string, hs []TopicHorizon, now time.Time) {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	for _, h := range hs {
		if !h.Exists {
			fmt.Fprintf(out, "kafka %s topic %s: does not exist, holds nothing of %s\n", h.Role, h.Topic, tenant)
			continue
		}
		if h.Keyed {
			fmt.Fprintf(out, "kafka %s topic %s: records of %s are in partition %d of %d (keyed by tenant id, murmur2 as the collector writes)\n", h.Role, h.Topic, tenant, h.Partition, h.Partitions)
		} else {
			fmt.Fprintf(out, "kafka %s topic %s: records of %s may be in any of its %d partitions (keyed by the source record's position)\n", h.Role, h.Topic, tenant, h.Partitions)
		}
		kept := "unbounded (-1)"
		if !h.Unbounded() {
			kept = fmt.Sprintf("%d (%s)", h.Retention.Milliseconds(), h.Retention)
		}
		if !h.TopicLevel {
			kept += ", the broker's default"
		}
		if want, err := topic.Millis(h.Configured); err == nil && want != h.Retention {
			kept += fmt.Sprintf("; configured %s: run 'shukei topics'", want)
		}
		fmt.Fprintf(out, "  retention.ms   %s; segment.ms %d (%s); retention checked every %s; files deleted %s later\n",
			kept, h.Segment.Milliseconds(), h.Segment, h.CheckInterval, h.DeleteDelay)
		o, ok := h.Oldest()
		if !ok {
			fmt.Fprintln(out, "  retained       nothing: every record written so far is gone")
			continue
		}
		n, _ := h.Newest()
		fmt.Fprintf(out, "  oldest record  partition %d offset %d at %s\n", o.Partition, o.First, ts(o.Oldest))
		fmt.Fprintf(out, "  newest record  partition %d offset %d at %s\n", n.Partition, n.Next-1, ts(n.Newest))
		if h.Unbounded() {
			fmt.Fprintln(out, "  gone by        never: the topic keeps records forever; run 'shukei topics' to set its retention")
			continue
		}
		fmt.Fprintf(out, "  gone by        %s: every record written for %s up to now (newest record + retention.ms + segment.ms + check interval + file delete delay)\n", ts(h.GoneBy), tenant)
		fmt.Fprintf(out, "  at the latest  %s: anything written up to now, in any partition (now + the same)\n", ts(now.Add(h.Retention+h.Segment+h.CheckInterval+h.DeleteDelay)))
	}
	fmt.Fprintln(out, "Kafka cannot delete one tenant's records: they only age out of the topics, with the whole log segments of their partition, by the times above.")
}
