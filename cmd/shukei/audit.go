package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query/breakglass"
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
	var (
		p         principal.Principal
		purposes  string
		expires   string
		approver  bool
		tokenFile string
		existOK   bool
	)
	add := &cobra.Command{
		Use:   "add",
		Short: "Register a principal; prints its token once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p.Purposes = splitList(purposes)
			if approver {
				p.Roles = []string{principal.RoleBreakGlassApprover}
			}
			if expires != "" {
				t, err := time.Parse("2006-01-02", expires)
				if err != nil {
					return fmt.Errorf("--expires %q: want YYYY-MM-DD", expires)
				}
				p.Expires = t
			}
			if existOK && tokenFile == "" {
				return errors.New("--exist-ok needs --token-file: a principal that already exists has no token to print")
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				store := principal.New(conn, a.cfg.ClickHouse.Database)
				if existOK {
					old, err := store.Get(cmd.Context(), p.ID)
					if err == nil {
						if st, ferr := os.Stat(tokenFile); ferr != nil || st.Size() == 0 {
							return fmt.Errorf("%s exists but its token file %s is missing or empty: disable it and add another, or rotate its token", p.ID, tokenFile)
						}
						if old.Kind != p.Kind || !slices.Equal(sortedCopy(old.Purposes), sortedCopy(p.Purposes)) || !slices.Equal(sortedCopy(old.Roles), sortedCopy(p.Roles)) {
							return fmt.Errorf("%s exists as a %s for %s: not changed (add with the same kind, purposes and roles, or manage it by hand)",
								p.ID, old.Kind, strings.Join(old.Purposes, ", "))
						}
						fmt.Fprintf(cmd.OutOrStdout(), "%s exists (%s) for %s; its token is in %s: nothing changed\n", p.ID, old.Kind, strings.Join(old.Purposes, ", "), tokenFile)
						return nil
					} else if !errors.Is(err, principal.ErrNotFound) {
						return err
					}
				}
				if tokenFile != "" {
					// Fail before the principal exists if the file cannot be written.
					if err := os.WriteFile(tokenFile, nil, 0o600); err != nil {
						return fmt.Errorf("--token-file: %w", err)
					}
				}
				tok, err := store.Add(cmd.Context(), p)
				if err != nil {
					return err
				}
				roles := ""
				if len(p.Roles) > 0 {
					roles = ", roles " + strings.Join(p.Roles, ", ")
				}
				if tokenFile != "" {
					if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
						return fmt.Errorf("--token-file: %w (the principal %s was added; disable it and add another)", err, p.ID)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "added %s (%s) for %s%s\ntoken written to %s\n", p.ID, p.Kind, strings.Join(p.Purposes, ", "), roles, tokenFile)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added %s (%s) for %s%s\ntoken (shown once): %s\n", p.ID, p.Kind, strings.Join(p.Purposes, ", "), roles, tok)
				return nil
			})
		},
	}
	add.Flags().StringVar(&p.ID, "id", "", "principal id (e.g. hana.sato or acme-research)")
	add.Flags().StringVar(&p.Kind, "kind", principal.Employee, "employee, affiliate, contractor or partner")
	add.Flags().StringVar(&purposes, "purposes", "", "comma-separated purposes the grant names")
	add.Flags().StringVar(&p.ContractRef, "contract-ref", "", "contractors: the outsourcing contract's reference")
	add.Flags().StringVar(&expires, "expires", "", "YYYY-MM-DD the grant ends (required for contractors)")
	add.Flags().StringVar(&tokenFile, "token-file", "", "write the token to this file (mode 0600) instead of printing it: for a service such as Grafana")
	add.Flags().BoolVar(&existOK, "exist-ok", false, "with --token-file: succeed without change when the principal exists with the same kind, purposes and roles and the token file is not empty")
	add.Flags().BoolVar(&approver, "approver", false, "grant the break-glass approver role ("+principal.RoleBreakGlassApprover+"; employees and affiliates only)")
	_ = add.MarkFlagRequired("id")

	list := &cobra.Command{
		Use:   "list",
		Short: "List principals and their grants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				ps, err := principal.New(conn, a.cfg.ClickHouse.Database).List(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tPURPOSES\tROLES\tCONTRACT\tEXPIRES\tDISABLED\t")
				for _, x := range ps {
					exp := "-"
					if !x.Expires.IsZero() {
						exp = x.Expires.UTC().Format("2006-01-02")
					}
					roles := "-"
					if len(x.Roles) > 0 {
						roles = strings.Join(x.Roles, ",")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t\n", shown(x.ID), shown(x.Kind), shown(strings.Join(x.Purposes, ",")), shown(roles),
						shown(x.ContractRef), exp, x.Disabled)
				}
				return tw.Flush()
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
				if _, err := principal.New(conn, a.cfg.ClickHouse.Database).Update(cmd.Context(), id, func(x *principal.Principal) error {
					x.Disabled = true
					return nil
				}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "disabled %s\n", id)
				return nil
			})
		},
	}
	disable.Flags().StringVar(&id, "id", "", "principal id")
	_ = disable.MarkFlagRequired("id")
	cmd.AddCommand(add, list, disable)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
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
				rs, err := audit.New(conn, a.cfg.ClickHouse.Database).Report(cmd.Context(), who, month)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				var allowed, denied int
				var rows uint64
				tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tAT\tPURPOSE\tTENANT\tTICKET\tREPORT\tDECISION\tREASON\tROWS\tε\t")
				for _, r := range rs {
					tenant := "-"
					if r.Tenant != "" {
						tenant = shown(r.Tenant)
					}
					// Every text field shown escaped: a record written before free text was
					// refused unless printable must not rewrite the terminal or hide a line.
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%g\t\n", r.Seq, r.At.UTC().Format(time.RFC3339), shown(r.Purpose), tenant,
						shown(r.Ticket), shown(r.Report), shown(r.Decision), shown(r.Reason), r.Rows, r.BudgetEpsilon)
					if r.Decision == audit.Allowed {
						allowed++
						rows += r.Rows
					} else {
						denied++
					}
				}
				_ = tw.Flush()
				kind, ref := "", ""
				if len(rs) > 0 {
					kind, ref = rs[0].Kind, rs[0].ContractRef
				}
				fmt.Fprintf(out, "%s (%s %s) in %s: %d requests allowed (%d rows), %d denied\n", shown(who), shown(kind), shown(ref), month, allowed, rows, denied)
				return nil
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

// shown is s as a terminal may print it: every rune that is not printable (unicode.IsGraphic:
// control characters, escape sequences, format characters such as bidirectional overrides,
// line breaks, tabs) and every byte that is not UTF-8 is escaped Go-style (\x1b, \u202e, \n,
// \xff), and so is the backslash, so that a stored text can neither rewrite the terminal, hide
// or fake a line, nor pass for an escape. Free text is refused unless printable when stored
// (breakglass.Printable, the one rule of what is printable); this covers rows from before.
func shown(s string) string {
	if _, ok := breakglass.Printable(s); ok && !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unicode.IsGraphic(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e', '\n'
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
