package main

import (
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/aggregator"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/ops"
)

func newAtomsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "atoms",
		Short: "Seal the weeks' gated atoms (what aggregate reports and dashboards read)",
		Long: `The aggregate reports of service_improvement and marketing, and the dashboards, read only
gated atoms: one segment (edition; for marketing, contract status and edition) × one ISO week,
each of at least k distinct tenants (the policy's k, or a larger query.k). A week's atoms are
computed once, aggregator.seal_after after the week ends, from the purpose's daily mart, and
published through the release log (kafka.release_topic): the first seal of a week is the only
one ever written, so what a report shows of a week never changes. The aggregator's release
step seals on its own; 'atoms seal' runs one pass.`,
	}
	seal := &cobra.Command{
		Use:   "seal",
		Short: "Seal every week that ended aggregator.seal_after ago and is not sealed yet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := ops.QueryK(a.cfg.Query)
			if err != nil {
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				s := aggregator.NewSealer(a.cfg, conn, k, nil, a.log)
				defer s.Close()
				sealed, err := s.SealDue(cmd.Context())
				if err == nil || len(sealed) > 0 {
					gate.WriteSeals(cmd.OutOrStdout(), sealed) // what was sealed before an error too
				}
				return err
			})
		},
	}
	cmd.AddCommand(seal)
	return cmd
}
