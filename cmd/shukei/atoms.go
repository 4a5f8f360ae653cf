package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/aggregator"
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
			return aggregator.SealDueTo(cmd.Context(), cmd.OutOrStdout(), a.cfg, a.log)
		},
	}
	cmd.AddCommand(seal)
	return cmd
}
