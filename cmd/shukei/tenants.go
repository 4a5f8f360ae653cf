package main

import (
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
	"github.com/shukei/shukei/retention"
)

func newTenantsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Manage the tenant registry: add, set, consent, list, token",
		Long: `tenants manages the registry the pipeline reads: each tenant's contract status (trial, beta,
contracted, terminated), edition, size band, contract end, consents (purpose or whole policy
version, with time) and ingest tokens (kept only as SHA-256 hashes). Running processors and
collectors see a change within registry.refresh.`,
	}
	var t registry.Tenant
	var contractEnd string
	tenantFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&t.ID, "tenant", "", "tenant id")
		c.Flags().StringVar(&t.Status, "status", "", "trial, beta, contracted or terminated")
		c.Flags().StringVar(&t.Edition, "edition", "", "edition (a short id, e.g. standard)")
		c.Flags().StringVar(&t.SizeBand, "size-band", "", "size band (a short id, e.g. s, m, l)")
		c.Flags().StringVar(&contractEnd, "contract-end", "", "contract (or trial) end date, YYYY-MM-DD")
		_ = c.MarkFlagRequired("tenant")
	}
	parseEnd := func() (err error) {
		t.ContractEnd, err = flagTime("--contract-end", contractEnd, time.DateOnly, "YYYY-MM-DD", time.Time{})
		return err
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Register a tenant; prints its first ingest token once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parseEnd(); err != nil {
				return err
			}
			return withAdmin(a, cmd, true, func(r registry.Admin) error { return r.AddTenant(cmd.Context(), t) })
		},
	}
	tenantFlags(add)
	set := &cobra.Command{
		Use:   "set",
		Short: "Change a tenant's status, edition, size band or contract end",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := parseEnd(); err != nil {
				return err
			}
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.SetTenant(cmd.Context(), t) })
		},
	}
	tenantFlags(set)

	var purpose, at string
	var version int
	var withdraw bool
	consent := &cobra.Command{
		Use:   "consent",
		Short: "Record a tenant's consent (or its withdrawal) to a purpose or to a policy version",
		Long: `consent records that a tenant consented to a purpose under a policy version
(--purpose external_consented --version 1), or to a policy version as a whole
(--purpose policy --version 2). A consent counts for data collected at or after --at (default
now): it never widens what was collected before it. --withdraw records a withdrawal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if purpose != decision.ConsentToPolicy {
				if _, err := policy.ParsePurpose(purpose); err != nil {
					return fmt.Errorf("--purpose: %w (or 'policy' for a whole version)", err)
				}
			}
			when, err := flagTime("--at", at, time.RFC3339, "RFC 3339", time.Now().UTC())
			if err != nil {
				return err
			}
			return withAdmin(a, cmd, false, func(r registry.Admin) error {
				return r.Consent(cmd.Context(), t.ID, purpose, version, !withdraw, when)
			})
		},
	}
	consent.Flags().StringVar(&t.ID, "tenant", "", "tenant id")
	consent.Flags().StringVar(&purpose, "purpose", "", "purpose id, or 'policy' for consent to a whole policy version")
	consent.Flags().IntVar(&version, "version", 1, "policy version the consent refers to")
	consent.Flags().StringVar(&at, "at", "", "when it was given, RFC 3339 (default now)")
	consent.Flags().BoolVar(&withdraw, "withdraw", false, "record a withdrawal instead")
	_ = consent.MarkFlagRequired("tenant")
	_ = consent.MarkFlagRequired("purpose")

	list := &cobra.Command{
		Use:   "list",
		Short: "List registered tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.ListTenants(cmd.Context()) })
		},
	}

	issue := func(cmd *cobra.Command, _ []string) error {
		return withAdmin(a, cmd, false, func(r registry.Admin) error { return r.IssueToken(cmd.Context(), t.ID) })
	}
	token := &cobra.Command{
		Use:   "token",
		Short: "Issue another ingest token for a tenant (printed once); 'token revoke' withdraws one",
		Args:  cobra.NoArgs,
		RunE:  issue,
	}
	token.PersistentFlags().StringVar(&t.ID, "tenant", "", "tenant id")
	_ = token.MarkPersistentFlagRequired("tenant")
	token.AddCommand(&cobra.Command{
		Use:   "issue",
		Short: "Issue another ingest token for a tenant (printed once)",
		Args:  cobra.NoArgs,
		RunE:  issue,
	})
	var revokeAll bool
	var revokeToken string
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "Withdraw an ingest token (--token, the token or its SHA-256 hex) or all of them (--all)",
		Long: `revoke withdraws ingest tokens of a tenant. Collectors answer 401 to a revoked token within
one registry refresh. Setting a tenant terminated revokes all its tokens by itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if revokeAll == (revokeToken != "") {
				return fmt.Errorf("give exactly one of --token and --all")
			}
			return withAdmin(a, cmd, false, func(r registry.Admin) error {
				return r.RevokeToken(cmd.Context(), t.ID, revokeToken, revokeAll)
			})
		},
	}
	revoke.Flags().BoolVar(&revokeAll, "all", false, "revoke every token of the tenant")
	revoke.Flags().StringVar(&revokeToken, "token", "", "the token (shk_…) or its SHA-256 hex")
	token.AddCommand(revoke)

	var delTenant, delReason string
	del := &cobra.Command{
		Use:   "delete --tenant T [--reason R]",
		Short: "Delete a tenant now: every row of it in every table, its pseudonymisation root, with a receipt in the audit log",
		Long: `delete erases a tenant at once, as retention does when its contract has ended past the policy's
retention: its pseudonymisation root first (no pseudonym of it can be made or linked again),
then every row with its tenant_id in every Shukei database (registry, store, marts, rejections,
the aggregator's per-tenant raw material of open weeks and months), waiting until ClickHouse has
applied the deletions and checking that nothing is left, then a receipt in the audit log. Its
events still in Kafka are refused if read later (the registry keeps only a keyed hash of the id,
to recognise them). 'shukei retention verify --tenant T' shows what is left and when Kafka ages
out its records.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if delTenant == "" {
				return fmt.Errorf("--tenant is required")
			}
			return retention.DeleteTenantTo(cmd.Context(), cmd.OutOrStdout(), a.cfg, a.log, delTenant, delReason)
		},
	}
	del.Flags().StringVar(&delTenant, "tenant", "", "the tenant id")
	del.Flags().StringVar(&delReason, "reason", "an operator's request (shukei tenants delete)", "why (kept in the audit log's receipt), e.g. a ticket id")
	cmd.AddCommand(add, set, consent, list, token, del, newTicketCmd(a))
	return cmd
}

func newKeysCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the master key that protects the pseudonymisation keys",
	}
	var path string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Write a new random master key to a file (mode 0600); never overwrites",
		Long: `init writes a new 32-byte master key as hex to --file, readable only by its owner. Point
anonymizer.master_key_file at it. Losing the key makes every tenant's pseudonymisation root
unreadable; it is never stored in ClickHouse or in the repository.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.InitMasterKey(cmd.OutOrStdout(), path)
		},
	}
	initCmd.Flags().StringVar(&path, "file", ".services/master.key", "where to write the key")
	var envPath string
	compose := &cobra.Command{
		Use:   "compose",
		Short: "Write the secrets docker-compose.yml reads (.env, mode 0600); never overwrites",
		Long: `compose writes a new .env for docker-compose.yml: the master key, the administrator's
ClickHouse password, the users key and, derived from it, each role's own key (promise 16:
each container gets only its own), the audit log's and the ledger's chain keys (promise 17),
and a Grafana admin password. Keep the file outside the
repository and readable by its owner only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WriteComposeEnv(cmd.OutOrStdout(), envPath)
		},
	}
	compose.Flags().StringVar(&envPath, "file", ".env", "where to write them")
	cmd.AddCommand(initCmd, compose)
	return cmd
}

// withAdmin runs fn with the registry as the tenants and policy commands administer it, over
// a connection of its own; withMaster loads the master key too (registering a tenant makes its
// pseudonymisation root).
func withAdmin(a *app, cmd *cobra.Command, withMaster bool, fn func(registry.Admin) error) error {
	return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
		var master *pseudonym.MasterKey
		if withMaster {
			var err error
			if master, err = ops.MasterKey(a.cfg.Anonymizer); err != nil {
				return err
			}
		}
		return fn(registry.Admin{Reg: registry.New(conn, a.cfg.ClickHouse.Database, master).Placing(a.cfg.ClickHouse.Cluster), Out: cmd.OutOrStdout()})
	})
}

// flagTime is the time a flag gives, parsed with layout; def when the flag is empty. The error
// names the flag and says what it wants.
func flagTime(flag, value, layout, want string, def time.Time) (time.Time, error) {
	if value == "" {
		return def, nil
	}
	t, err := time.Parse(layout, value)
	if err != nil {
		return t, fmt.Errorf("%s %q: want %s", flag, value, want)
	}
	return t, nil
}
