package main

import (
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query/principal"
)

func newPrincipalsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "principals",
		Short: "Manage who may use the query service and for which purposes: add, list, disable",
		Long: `principals manages the query service's users: employees, affiliates, contractors (with their
contract reference and an expiry, clause 5) and partners (external purposes only). Each has a
token, stored only as its SHA-256 hash, and a grant naming the purposes it may act for. An
employee or affiliate may also hold the break-glass approver grant (--approver): only its
holders approve another principal's break-glass request.`,
	}
	var reg principal.Registration
	add := &cobra.Command{
		Use:   "add",
		Short: "Register a principal; prints its token once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := reg.Principal(); err != nil { // before connecting
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return principal.New(conn, a.cfg.ClickHouse.Database).Register(cmd.Context(), cmd.OutOrStdout(), reg)
			})
		},
	}
	add.Flags().StringVar(&reg.ID, "id", "", "principal id (e.g. hana.sato or acme-research)")
	add.Flags().StringVar(&reg.Kind, "kind", principal.Employee, "employee, affiliate, contractor or partner")
	add.Flags().StringVar(&reg.Purposes, "purposes", "", "comma-separated purposes the grant names")
	add.Flags().StringVar(&reg.ContractRef, "contract-ref", "", "contractors: the outsourcing contract's reference")
	add.Flags().StringVar(&reg.Expires, "expires", "", "YYYY-MM-DD the grant ends (required for contractors)")
	add.Flags().StringVar(&reg.TokenFile, "token-file", "", "write the token to this file (mode 0600) instead of printing it: for a service such as Grafana")
	add.Flags().BoolVar(&reg.ExistOK, "exist-ok", false, "with --token-file: succeed without change when the principal exists with the same kind, purposes and roles and the token file is not empty")
	add.Flags().BoolVar(&reg.Approver, "approver", false, "grant the break-glass approver role ("+principal.RoleBreakGlassApprover+"; employees and affiliates only)")
	_ = add.MarkFlagRequired("id")

	list := &cobra.Command{
		Use:   "list",
		Short: "List principals and their grants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return principal.New(conn, a.cfg.ClickHouse.Database).ListTo(cmd.Context(), cmd.OutOrStdout())
			})
		},
	}
	var id string
	disable := &cobra.Command{
		Use:   "disable",
		Short: "Disable a principal: its token stops working at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return principal.New(conn, a.cfg.ClickHouse.Database).DisableTo(cmd.Context(), cmd.OutOrStdout(), id)
			})
		},
	}
	disable.Flags().StringVar(&id, "id", "", "principal id")
	_ = disable.MarkFlagRequired("id")
	cmd.AddCommand(add, list, disable)
	return cmd
}

func newAuditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the query service's audit log: verify and anchor the chain, report what a principal read",
	}
	var who, month string
	report := &cobra.Command{
		Use:   "report",
		Short: "Print what a principal (e.g. a contractor) requested in a month, for supervision (clause 5)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return audit.New(conn, a.cfg.ClickHouse.Database).ReportTo(cmd.Context(), cmd.OutOrStdout(), who, month)
			})
		},
	}
	report.Flags().StringVar(&who, "principal", "", "principal id")
	report.Flags().StringVar(&month, "month", time.Now().UTC().Format("2006-01"), "YYYY-MM")
	_ = report.MarkFlagRequired("principal")
	cmd.AddCommand(report)
	cmd.AddCommand(newAuditChainCmds(a)...) // verify, anchor, init-key (chains.go)
	return cmd
}
