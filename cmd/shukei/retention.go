package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/retention"
)

func newRetentionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Delete what the policy no longer keeps: ended tenants, expired partitions, released partials",
		Long: `retention carries out the policy's retention (clause 2(3)). 'run' deletes every tenant whose
contract ended at least retention.after_contract_end_days ago — every row in every table with a
tenant_id (event store, rejections, purpose marts and rollups, registry entry, consents,
tickets) — destroys its pseudonymisation root first, and appends a deletion receipt to the audit
log; then it drops whole monthly partitions older than the event store and the DLQ keep (no TTL
on ClickHouse 18.16), and deletes the aggregator's un-noised partial aggregates of windows
released more than aggregator.state_retention ago (never those of an unreleased window, never
the progress a restarting aggregator resumes from). Published DP releases are kept.

'verify --tenant T' counts what is left of a tenant in every table, and tells until when the
Kafka topics still hold its records: the raw topic's partition of the tenant (records keyed by
tenant id), the DLQ's partitions (keyed by source position), the oldest and newest retained
record, retention.ms, and the time by which everything written for the tenant so far is gone.
Kafka cannot delete one tenant's records, only age them out: kafka.raw_retention bounds how long
a raw user id exists anywhere in Shukei.`,
	}
	keeper := func(conn driver.Conn) *retention.Keeper { return retention.NewKeeper(a.cfg, conn, conn, a.log) }
	var every time.Duration
	var at string
	run := &cobra.Command{
		Use:   "run",
		Short: "Delete due tenants and expired partitions now (or every --every, as a long-running role)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := retention.Open(cmd.Context(), a.cfg, a.log)
			if err != nil {
				return err
			}
			defer r.Close()
			r.Every = every
			r.Report = func(rep retention.Report) { printRetention(cmd.OutOrStdout(), rep) }
			if at != "" {
				r.At = func() (time.Time, error) {
					now, err := time.Parse(time.RFC3339, at)
					if err != nil {
						return now, fmt.Errorf("--now %q: want RFC 3339", at)
					}
					return now, nil
				}
			}
			return r.Run(cmd.Context())
		},
	}
	run.Flags().DurationVar(&every, "every", 0, "keep running and repeat this often (e.g. 24h); 0: once")
	run.Flags().StringVar(&at, "now", "", "act as of this time (RFC 3339) instead of now, to rehearse a run")

	var tenant string
	verify := &cobra.Command{
		Use:   "verify --tenant T",
		Short: "Count what is left of a tenant in every table (zero after its deletion) and when Kafka ages out its records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			err := ops.WithClickHouse(ctx, a.cfg.ClickHouse, func(conn driver.Conn) error {
				counts, err := keeper(conn).Verify(ctx, tenant)
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
			})
			if err != nil {
				return err
			}
			k := a.cfg.Kafka
			if err := topic.Reachable(ctx, k.Brokers, k.DialTimeout); err != nil {
				return fmt.Errorf("the Kafka topics' horizon of %s is unknown: %w", tenant, err)
			}
			hs, err := retention.TopicHorizons(ctx, k, tenant)
			printHorizons(out, tenant, hs, time.Now().UTC())
			return err
		},
	}
	verify.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	_ = verify.MarkFlagRequired("tenant")
	cmd.AddCommand(run, verify)
	return cmd
}

func printRetention(out io.Writer, rep retention.Report) {
	for _, r := range rep.Deleted {
		fmt.Fprintf(out, "deleted tenant %s: %d rows in %d tables, pseudonymisation root destroyed (audit record #%d)\n", r.Tenant, r.Rows, r.Tables, r.AuditSeq)
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

// printHorizons says, per topic, until when Kafka still holds the tenant's records.
func printHorizons(out io.Writer, tenant string, hs []retention.TopicHorizon, now time.Time) {
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
