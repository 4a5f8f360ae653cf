package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/guard"
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
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				v, err := policy.Embedded()
				if err != nil {
					return err
				}
				for n := 1; n <= v.Len(); n++ {
					p := v.Policy(n)
					fmt.Fprintf(out, "ok  v%d %q: %d purposes, %d categories, k=%d\n", p.Version, p.Title, len(p.Purposes), len(p.Categories), p.K)
				}
				return nil
			}
			var errs []error
			for _, f := range args {
				b, err := os.ReadFile(f)
				if err == nil {
					var p *policy.Policy
					if p, err = policy.Parse(b); err == nil {
						fmt.Fprintf(out, "ok  %s: v%d %q\n", f, p.Version, p.Title)
						continue
					}
				}
				fmt.Fprintf(out, "bad %s:\n%v\n", f, err)
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
			}
			if len(errs) > 0 {
				return errQuiet
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
			// Explaining is about the policy, not the clock: any past event may be explained.
			ev, rej := guard.Inspect(b, time.Now(), event.Limits{MaxAge: 100 * 365 * 24 * time.Hour, MaxSkew: 24 * time.Hour})
			if rej != nil {
				return fmt.Errorf("the event is rejected before the policy sees it: %w", rej)
			}
			if tenantID == "" {
				tenantID = ev.TenantID
			}
			when := ev.OccurredAt
			if at != "" {
				if when, err = time.Parse(time.RFC3339, at); err != nil {
					return fmt.Errorf("--at %q: want RFC 3339", at)
				}
			}
			conn, err := ops.OpenClickHouse(cmd.Context(), a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer conn.Close()
			t, err := registry.New(conn, a.cfg.ClickHouse.Database, nil).Get(cmd.Context(), tenantID)
			if err != nil {
				if errors.Is(err, registry.ErrUnknownTenant) {
					return fmt.Errorf("%w: the event gets no purposes until the tenant is registered (shukei tenants add)", err)
				}
				return err
			}
			v, err := registry.New(conn, a.cfg.ClickHouse.Database, nil).Versions(cmd.Context()) // with the recorded activations
			if err != nil {
				return err
			}
			x, err := decision.NewPolicyTagger(v).Explain(decision.Category(ev.Schema), &t, when)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), x.String())
			return nil
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
			if format != "fides" {
				return fmt.Errorf("--format %q: only fides is supported", format)
			}
			v, err := policy.Embedded()
			if err != nil {
				return err
			}
			if version < 1 || version > v.Len() {
				return fmt.Errorf("--version %d: the embedded policy has versions 1..%d", version, v.Len())
			}
			b, err := policy.ExportFides(v.Policy(version))
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
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
			n, err := strconv.Atoi(strings.TrimPrefix(args[0], "v"))
			if err != nil {
				return fmt.Errorf("version %q: want a number such as 2 (or v2)", args[0])
			}
			at := time.Now().UTC()
			if activateAt != "" && activateAt != "now" {
				if at, err = time.Parse(time.RFC3339, activateAt); err != nil {
					return fmt.Errorf("--at %q: want RFC 3339 or now", activateAt)
				}
			}
			if by == "" {
				by = os.Getenv("USER")
			}
			conn, err := ops.OpenClickHouse(cmd.Context(), a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer conn.Close()
			act, err := registry.New(conn, a.cfg.ClickHouse.Database, nil).ActivatePolicy(cmd.Context(), n, at, by)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy v%d in force from %s\n", act.Version, act.At.Format(time.RFC3339))
			return nil
		},
	}
	activate.Flags().StringVar(&activateAt, "at", "now", "activation time, RFC 3339 (now or later)")
	activate.Flags().StringVar(&by, "by", "", "who activated it (default $USER)")

	status := &cobra.Command{
		Use:   "status",
		Short: "List the policy versions built in, and since when each is in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := ops.OpenClickHouse(cmd.Context(), a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer conn.Close()
			v, err := registry.New(conn, a.cfg.ClickHouse.Database, nil).Versions(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tENACTED\tCONSENT\tIN FORCE FROM\t")
			for n := 1; n <= v.Len(); n++ {
				p := v.Policy(n)
				from := "not activated"
				if at, ok := v.Activation(n); ok {
					from = "the beginning"
					if !at.IsZero() {
						from = at.UTC().Format(time.RFC3339)
					}
				}
				consent := "not needed"
				if p.RequiresConsent {
					consent = "required"
				}
				fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t\n", p.Version, p.Enacted.Format("2006-01-02"), consent, from)
			}
			return tw.Flush()
		},
	}

	cmd.AddCommand(check, explain, export, activate, status)
	return cmd
}
