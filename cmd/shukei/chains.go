package main

import (
	"cmp"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/ops"
)

func newInitKeyCmd(what string, keyFile func() string) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "init-key [--file F]",
		Short: "Write a new random chain key (mode 0600) to " + what + ".key_file or --file; never overwrites one",
		Long: `init-key writes a fresh 32-byte key (64 hex digits) for the ` + what + ` chain's MAC, mode 0600, and
refuses to overwrite an existing file: a lost key leaves the records it keyed unverifiable.
Keep it apart from the master key and from every ClickHouse password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// keyFile is read now: the configuration is loaded once the command runs.
			return chain.InitKey(cmd.OutOrStdout(), what, cmp.Or(file, keyFile()))
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "where to write the key (default "+what+".key_file)")
	return cmd
}

// newAuditChainCmds are 'shukei audit verify' (with --anchor), 'anchor' and 'init-key'.
func newAuditChainCmds(a *app) []*cobra.Command {
	var anchorFile string
	verify := &cobra.Command{
		Use:   "verify [--anchor FILE]",
		Short: "Verify the audit log's chain with audit.key_file, and against the latest anchor in FILE",
		Long: `verify walks the whole audit log: sequences without a gap, a repeat or a fork, each record
linked to the one before, each keyed MAC checked with audit.key_file, unkeyed (legacy) records
only before the first keyed one. With --anchor it also checks the latest anchor of this
database in FILE ('shukei audit anchor'): the anchored record must still be in the chain with
the anchored sequence and MAC, so an edit, insertion, deletion, reordering or truncation up to
it is found even if done with full write access to ClickHouse. Exits non-zero on any failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := ops.OptionalKey("audit.key_file", a.cfg.Audit.KeyFile, a.cfg.Audit.Key, nil)
			if err != nil {
				return err
			}
			anc, err := chain.AnchorIn(anchorFile, chain.AuditLog, a.cfg.ClickHouse.Database)
			if err != nil {
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return audit.New(conn, a.cfg.ClickHouse.Database, audit.WithKey(key)).VerifyTo(cmd.Context(), cmd.OutOrStdout(), anc)
			})
		},
	}
	verify.Flags().StringVar(&anchorFile, "anchor", "", "anchor file ('shukei audit anchor --out'): also check the chain holds its latest anchor")
	var out string
	anchor := &cobra.Command{
		Use:   "anchor [--out FILE]",
		Short: "Verify the audit log and append its head (sequence and MAC) as one JSON line to FILE, or print it",
		Long: `anchor verifies the audit log with audit.key_file and writes its head — the last record's
sequence and MAC — as one JSON line: appended to FILE with --out, else printed (for a ticketing
system). Keep anchors outside ClickHouse: 'shukei audit verify --anchor FILE' then finds any
rewrite up to the anchored head. The query service also anchors every audit.anchor_every to
audit.anchor_file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := ops.OptionalKey("audit.key_file", a.cfg.Audit.KeyFile, a.cfg.Audit.Key, nil)
			if err != nil {
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return audit.New(conn, a.cfg.ClickHouse.Database, audit.WithKey(key)).AnchorTo(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), out)
			})
		},
	}
	anchor.Flags().StringVar(&out, "out", "", "append the anchor to this file instead of printing it")
	return []*cobra.Command{verify, anchor, newInitKeyCmd("audit", func() string { return a.cfg.Audit.KeyFile })}
}

func newLedgerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Check the privacy-budget ledger's chains: verify, anchor their heads, make the key",
	}
	var anchorFile string
	verify := &cobra.Command{
		Use:   "verify [--anchor FILE]",
		Short: "Verify every purpose's ledger chain with ledger.key_file, and against the latest anchor in FILE",
		Long: `verify walks every purpose's chain of the budget ledger: sequences without a gap, a repeat or
a fork, each entry linked to the one before, each keyed MAC checked with ledger.key_file,
unkeyed (legacy) entries only before the first keyed one. With --anchor it also checks the
latest anchor of this database in FILE ('shukei ledger anchor'): each anchored purpose's chain
must still hold the anchored entry with its sequence and MAC, so a deleted charge (a refund),
an edit, insertion, reordering or truncation up to it is found even if done with full write
access to ClickHouse. Exits non-zero on any failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := ops.OptionalKey("ledger.key_file", a.cfg.Ledger.KeyFile, a.cfg.Ledger.Key, nil)
			if err != nil {
				return err
			}
			anc, err := chain.AnchorIn(anchorFile, chain.LedgerLog, a.cfg.ClickHouse.Database)
			if err != nil {
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				return ledger.New(conn, a.cfg.ClickHouse.Database).WithKey(key).VerifyTo(cmd.Context(), cmd.OutOrStdout(), anc)
			})
		},
	}
	verify.Flags().StringVar(&anchorFile, "anchor", "", "anchor file ('shukei ledger anchor --out'): also check the chains hold its latest anchor")
	var out string
	anchor := &cobra.Command{
		Use:   "anchor [--out FILE]",
		Short: "Verify the ledger and append every purpose's chain head as one JSON line to FILE, or print it",
		Long: `anchor verifies every purpose's chain of the budget ledger with ledger.key_file and writes
their heads — each chain's last sequence and MAC — as one JSON line: appended to FILE with
--out, else printed (for a ticketing system). The aggregator also anchors every
ledger.anchor_every to ledger.anchor_file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := ops.OptionalKey("ledger.key_file", a.cfg.Ledger.KeyFile, a.cfg.Ledger.Key, nil)
			if err != nil {
				return err
			}
			return ops.WithClickHouse(cmd.Context(), a.cfg.ClickHouse, func(conn driver.Conn) error {
				db := a.cfg.ClickHouse.Database
				return ledger.New(conn, db).WithKey(key).AnchorTo(cmd.Context(), db, cmd.OutOrStdout(), cmd.ErrOrStderr(), out)
			})
		},
	}
	anchor.Flags().StringVar(&out, "out", "", "append the anchor to this file instead of printing it")
	cmd.AddCommand(verify, anchor, newInitKeyCmd("ledger", func() string { return a.cfg.Ledger.KeyFile }))
	return cmd
}
