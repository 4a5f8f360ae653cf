package main

import (
	"encoding/hex"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/ops"
)

func newUsersCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Show the roles' ClickHouse users and hand each role its key",
		Long: `users shows the ClickHouse users 'shukei migrate' declares, one set per role (promise 16),
and hands out the keys their passwords derive from. Run it as the administrator (with
clickhouse.users_key_file, or the master key it falls back to); give each role only its own
key, as the file clickhouse.role_key_file (mode 0600).`,
	}
	roleArg := func(args []string) (string, error) {
		for _, r := range migrations.Roles {
			if args[0] == r {
				return r, nil
			}
		}
		return "", fmt.Errorf("no role %q (roles: %s)", args[0], strings.Join(migrations.Roles, ", "))
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "Print every role's users, their mode and databases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ROLE\tUSER\tMODE\tDATABASES")
			for _, role := range migrations.Roles {
				// Passwords are not shown: any key lists the same names and databases.
				us, err := migrations.RoleUsers(a.cfg.ClickHouse.Database, role, []byte("list"))
				if err != nil {
					return err
				}
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Role, u.Name, u.Mode, strings.Join(u.Databases, ","))
				}
			}
			return tw.Flush()
		},
	}
	key := &cobra.Command{
		Use:   "key <role>",
		Short: "Print a role's key (for its clickhouse.role_key_file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := roleArg(args)
			if err != nil {
				return err
			}
			uk, err := ops.UsersKey(a.cfg)
			if err != nil {
				return err
			}
			if uk == nil {
				return fmt.Errorf("no users key: set clickhouse.users_key_file")
			}
			fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(migrations.RoleKey(uk, a.cfg.ClickHouse.Database, role)))
			return nil
		},
	}
	creds := &cobra.Command{
		Use:   "credentials <role>",
		Short: "Print a role's ClickHouse users and passwords, one 'user password' per line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := roleArg(args)
			if err != nil {
				return err
			}
			k, err := ops.RoleKey(a.cfg, role)
			if err != nil {
				return err
			}
			if k == nil {
				return fmt.Errorf("no key: set clickhouse.users_key_file or clickhouse.role_key_file")
			}
			us, err := migrations.RoleUsers(a.cfg.ClickHouse.Database, role, k)
			if err != nil {
				return err
			}
			for _, u := range us {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", u.Name, u.Password)
			}
			return nil
		},
	}
	cmd.AddCommand(list, key, creds)
	return cmd
}
