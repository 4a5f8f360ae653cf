package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

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
			r.Report = func(rep retention.Report) { retention.WriteReport(cmd.OutOrStdout(), rep) }
			r.At = retention.AsOf(at)
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
			return retention.VerifyTenantTo(cmd.Context(), cmd.OutOrStdout(), a.cfg, a.log, tenant)
		},
	}
	verify.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	_ = verify.MarkFlagRequired("tenant")
	var since, until string
	rebuild := &cobra.Command{
		Use:   "rebuild-marts --since DATE [--until DATE]",
		Short: "Re-derive the purpose marts of whole ISO weeks from the event store, on every shard",
		Long: `rebuild-marts deletes the purpose marts' rows of the ISO weeks from --since's to --until's
(default: this week) and fills them again from the event store, by each materialised view's own
SELECT, on every shard of a cluster. The marts are filled as the processor inserts events, and
ClickHouse writes the event store before the marts, each on its own: a server killed in between
keeps the events and loses that insert's rows of the marts (the processor warns when it resumes
after such a batch). Run it for those weeks with the processors stopped, or for weeks no event
arrives in any more: events stored into those weeks meanwhile may be counted twice. It connects
as the administrator (clickhouse.username).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := time.Parse(time.DateOnly, since)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			to := time.Now().UTC()
			if until != "" {
				if to, err = time.Parse(time.DateOnly, until); err != nil {
					return fmt.Errorf("--until: %w", err)
				}
			}
			return retention.RebuildMarts(cmd.Context(), cmd.OutOrStdout(), a.cfg, from, to)
		},
	}
	rebuild.Flags().StringVar(&since, "since", "", "a day (YYYY-MM-DD) of the first week to rebuild")
	rebuild.Flags().StringVar(&until, "until", "", "a day (YYYY-MM-DD) of the last week to rebuild (default: today)")
	_ = rebuild.MarkFlagRequired("since")
	cmd.AddCommand(run, verify, rebuild)
	return cmd
}
