package main

import (
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
	list := &cobra.Command{
		Use:   "list",
		Short: "Print every role's users, their mode and databases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return migrations.WriteMatrix(cmd.OutOrStdout(), a.cfg.ClickHouse.Database)
		},
	}
	key := &cobra.Command{
		Use:   "key <role>",
		Short: "Print a role's key (for its clickhouse.role_key_file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return ops.WriteRoleKey(cmd.OutOrStdout(), a.cfg, args[0])
		},
	}
	creds := &cobra.Command{
		Use:   "credentials <role>",
		Short: "Print a role's ClickHouse users and passwords, one 'user password' per line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return ops.WriteRoleCredentials(cmd.OutOrStdout(), a.cfg, args[0])
		},
	}
	cmd.AddCommand(list, key, creds)
	return cmd
}
