package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check, explain and export the data policy Shukei enforces",
		Long: `policy works with the policy as code in policy/ (embedded in the binary): the purposes
with their clauses, the category × purpose matrix of granularities, consent, statuses, k,
retention and the privacy budget.`,
	}
	check := &cobra.Command{
		Use:   "check [file.yaml ...]",
		Short: "Validate policy files (default: the embedded versions)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return policy.CheckEmbedded(cmd.OutOrStdout())
			}
			if policy.CheckFiles(cmd.OutOrStdout(), args) != nil {
				return errQuiet // each bad file is printed with its problems
			}
			return nil
		},
	}

	var tenantID, at string
	explain := &cobra.Command{
		Use:   "explain <event.json> --tenant T",
		Short: "Show the purposes an event gets and, for each refused one, the rule and clause",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			ev, err := decision.InspectToExplain(b, time.Now())
			if err != nil {
				return err
			}
			when, err := flagTime("--at", at, time.RFC3339, "RFC 3339", ev.OccurredAt)
			if err != nil {
				return err
			}
			return withAdmin(a, cmd, false, func(r registry.Admin) error {
				return decision.ExplainTo(cmd.Context(), r.Out, r.Reg, ev, tenantID, when)
			})
		},
	}
	explain.Flags().StringVar(&tenantID, "tenant", "", "tenant to explain for (default: the event's)")
	explain.Flags().StringVar(&at, "at", "", "explain as of this time, RFC 3339 (default: the event's occurred_at)")

	var format string
	var version int
	export := &cobra.Command{
		Use:   "export --format fides",
		Short: "Export the policy as a fideslang-style manifest for review in Fides",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return policy.ExportTo(cmd.OutOrStdout(), format, version)
		},
	}
	export.Flags().StringVar(&format, "format", "fides", "output format (fides)")
	export.Flags().IntVar(&version, "version", 1, "policy version to export")

	var activateAt, by string
	activate := &cobra.Command{
		Use:   "activate <version> --at TIME",
		Short: "Put a policy version built into this binary in force from a time (never in the past)",
		Long: `activate records that policy version N is in force from --at (RFC 3339, now or later). Every
running processor and aggregator applies it at its next registry refresh, and tags events
collected from that time under version N — for a version that requires consent, only the events
of tenants whose consent to it is recorded and in force when the event was collected; the other
tenants' events keep the purposes of the version before. Consent given later never widens the
purposes of data collected before it. Versions are activated in order; an activation time cannot
move once recorded.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := policy.ParseVersion(args[0])
			if err != nil {
				return err
			}
			at := time.Now().UTC()
			if activateAt != "now" {
				if at, err = flagTime("--at", activateAt, time.RFC3339, "RFC 3339 or now", at); err != nil {
					return err
				}
			}
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.ActivatePolicy(cmd.Context(), n, at, by) })
		},
	}
	activate.Flags().StringVar(&activateAt, "at", "now", "activation time, RFC 3339 (now or later)")
	activate.Flags().StringVar(&by, "by", "", "who activated it (default $USER)")

	status := &cobra.Command{
		Use:   "status",
		Short: "List the policy versions built in, and since when each is in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.PolicyStatus(cmd.Context()) })
		},
	}

	cmd.AddCommand(check, explain, export, activate, status)
	return cmd
}
