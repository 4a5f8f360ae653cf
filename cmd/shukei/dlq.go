package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/pipeline/dlq"
)

func newDLQCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect the dead-letter topic and replay kept payloads: stats, show, replay",
		Long: `dlq reads the processor's dead-letter topic (kafka.dlq_topic), one record per refused message
of the raw topic: its key is the refused message's position (<raw topic>/<partition>/<offset>),
its headers the reason, class (input_data, malformed, policy, duplicate), field, tenant,
schema, event id, a keyed hash of the payload and what was kept; its value the content-free
payload when one was kept. Every subcommand reads the topic from its beginning (or --since) to
the end offsets taken when it starts, so it always finishes.

  stats    counts by reason, class, tenant, field and day; only header values are printed
  show     one record by its key: headers, and the payload only when it was kept
  replay   re-submits kept, complete payloads to the raw topic so the processor decides them
           again (e.g. unknown_tenant after the tenant was registered); audited

Records that cannot be parsed are counted and reported, never shown.`,
	}
	var since, by string
	var asJSON bool
	stats := &cobra.Command{
		Use:   "stats [--since D] [--by reason,class,tenant,field,day] [--json]",
		Short: "Count DLQ records by reason, class, tenant, field or day (never content)",
		Long: `stats counts the DLQ's records, grouped by the dimensions --by names (default reason,class):
reason, class, tenant, field (the path of the offending value) and day (the UTC date of the
Kafka record). Each row also says how many records kept a payload. Re-sent copies of a record
(same key) count once; malformed records are counted by what is wrong with them. Nothing of a
refused message is printed: only reasons, classes, field paths, tenant ids and dates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return dlq.StatsTo(cmd.Context(), cmd.OutOrStdout(), dlq.SourceOf(a.cfg.Kafka), by, since, asJSON)
		},
	}
	stats.Flags().StringVar(&since, "since", "", "only records written since: a look-back (7d, 36h), a date (2025-05-01) or an RFC 3339 time")
	stats.Flags().StringVar(&by, "by", dlq.DefaultBy, "comma-separated dimensions to group by: reason, class, tenant, field, day")
	stats.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")

	show := &cobra.Command{
		Use:   "show <raw topic>/<partition>/<offset>",
		Short: "Print one DLQ record: its headers, and its payload only when it was kept",
		Long: `show finds the DLQ record of one refused message by its key, the message's position in the
raw topic, e.g. usage.raw/3/1042 (the rejections table has it as kafka_partition and
kafka_offset), and prints its headers. The payload is printed, as indented JSON, only when the
record kept it (kept=payload); it is content-free, every refused value a keyed hash. Otherwise
it says "payload not kept (metadata only)". Re-sent copies of the record are counted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return dlq.Show(cmd.Context(), cmd.OutOrStdout(), dlq.SourceOf(a.cfg.Kafka), args[0])
		},
	}

	var o dlq.ReplayOptions
	var replaySince string
	var replayJSON bool
	replay := &cobra.Command{
		Use:   "replay [--reason R] [--tenant T] [--since D] [--dry-run]",
		Short: "Re-submit kept DLQ payloads to the raw topic so the processor decides them again",
		Long: `replay writes the kept payloads of DLQ records back to the raw topic (key = tenant id, acknowledged
by all replicas) for the processor to decide again: for example --reason unknown_tenant once the
tenant is registered ('shukei tenants add'). Only complete payloads are replayed: a payload that
holds a keyed hash ("hmac-sha256:…") lost a refused value and is skipped, as is every record
that kept no payload. A user-level event whose payload has no user (dropped by policy) is
replayed with the nil UUID as user: such events count as one unknown user per tenant and
pseudonymisation period.

Each event is written at most once by event id: ids already in the event store are skipped,
repeats within the run too, and the processor's own dedupe catches a race. A second run after
the processor stored the first replays nothing.

Every run, --dry-run included, appends one record to the audit log (principal operator:<your
OS user>, report dlq_replay, the filters and counts, never content). It prints what was read,
eligible, replayed and skipped, by reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return dlq.ReplayConfigured(cmd.Context(), cmd.OutOrStdout(), a.cfg, a.log, o, replaySince, replayJSON)
		},
	}
	replay.Flags().StringVar(&o.Reason, "reason", "", "only records of this reason (e.g. unknown_tenant); default all")
	replay.Flags().StringVar(&o.Tenant, "tenant", "", "only records of this tenant; default all")
	replay.Flags().StringVar(&replaySince, "since", "", "only records written since: a look-back (7d, 36h), a date or an RFC 3339 time")
	replay.Flags().BoolVar(&o.DryRun, "dry-run", false, "decide and report (and audit) without writing to the raw topic")
	replay.Flags().BoolVar(&replayJSON, "json", false, "print the summary as JSON")

	cmd.AddCommand(stats, show, replay)
	return cmd
}
