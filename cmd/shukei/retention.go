package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/query/audit"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

func newRetentionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Delete what the policy no longer keeps: ended tenants, expired partitions",
		Long: `retention carries out the policy's retention (clause 2(3)). 'run' deletes every tenant whose
contract ended at least retention.after_contract_end_days ago — every row in every table with a
tenant_id (event store, rejections, purpose marts and rollups, registry entry, consents,
tickets) — destroys its pseudonymisation root first, and appends a deletion receipt to the audit
log; then it drops whole monthly partitions older than the event store and the DLQ keep (no TTL
on ClickHouse 18.16). Published DP releases are kept. 'verify --tenant T' counts what is left of
a tenant in every table.`,
	}
	keeper := func(conn driver.Conn) *retention.Keeper {
		db := a.cfg.ClickHouse.Database
		return retention.New(conn, db, registry.New(conn, db, nil), audit.New(conn, db), mustPolicy().Retention)
	}
	var every time.Duration
	var at string
	run := &cobra.Command{
		Use:   "run",
		Short: "Delete due tenants and expired partitions now (or every --every, as a long-running role)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			conn, err := openClickHouse(ctx, a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer conn.Close()
			k := keeper(conn)
			once := func() error {
				now := time.Now().UTC()
				if at != "" {
					if now, err = time.Parse(time.RFC3339, at); err != nil {
						return fmt.Errorf("--now %q: want RFC 3339", at)
					}
				}
				rep, err := k.Run(ctx, now)
				printRetention(cmd.OutOrStdout(), rep)
				return err
			}
			if every <= 0 {
				return once()
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				if err := once(); err != nil && ctx.Err() == nil {
					a.log.Error("retention run failed; retrying at the next tick", "err", err)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	run.Flags().DurationVar(&every, "every", 0, "keep running and repeat this often (e.g. 24h); 0: once")
	run.Flags().StringVar(&at, "now", "", "act as of this time (RFC 3339) instead of now, to rehearse a run")

	var tenant string
	verify := &cobra.Command{
		Use:   "verify --tenant T",
		Short: "Count what is left of a tenant in every table (zero after its deletion)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				counts, err := keeper(conn).Verify(cmd.Context(), tenant)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', tabwriter.AlignRight)
				var total uint64
				for _, c := range counts {
					fmt.Fprintf(tw, "%s\t%d\t\n", c.Table, c.Rows)
					total += c.Rows
				}
				_ = tw.Flush()
				fmt.Fprintf(cmd.OutOrStdout(), "%d rows of %s left in %d tables\n", total, tenant, len(counts))
				return nil
			})
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
	if len(rep.Deleted) == 0 && len(rep.Dropped) == 0 {
		fmt.Fprintln(out, "nothing due")
	}
}
