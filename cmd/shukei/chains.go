package main

import (
	"cmp"
	"context"
	"io"

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

// chainLog is a chained trail the verify and anchor commands check: the audit log or the
// budget ledger.
type chainLog interface {
	VerifyTo(ctx context.Context, w io.Writer, anc *chain.Anchor) error
	AnchorTo(ctx context.Context, w, note io.Writer, path string) error
}

// chainCmds is what differs between the audit log's and the ledger's verify, anchor and
// init-key commands (newChainCmds).
type chainCmds struct {
	log                     string  // chain.AuditLog or chain.LedgerLog, its settings' section too
	keyFile, key            *string // its key settings in app.cfg, read once it is loaded
	verifyShort, verifyLong string  // verify's help
	anchorUsage             string  // verify's --anchor flag
	anchorShort, anchorLong string  // anchor's help
	open                    func(conn driver.Conn, db string, key []byte) chainLog
}

// newChainCmds are 'shukei <log> verify' (with --anchor), 'anchor' and 'init-key'.
func newChainCmds(a *app, c chainCmds) []*cobra.Command {
	var anchorFile, out string
	// run loads the optional chain key, then verifies the chain (against the latest anchor in
	// anchorFile when given) or anchors its head to out.
	run := func(cmd *cobra.Command, verify bool) error {
		key, err := ops.OptionalKey(c.log+".key_file", *c.keyFile, *c.key, nil)
		if err != nil {
			return err
		}
		ctx, db := cmd.Context(), a.cfg.ClickHouse.Database
		anc, err := chain.AnchorIn(anchorFile, c.log, db) // anchorFile is verify's flag: "" for anchor
		if err != nil {
			return err
		}
		return ops.WithClickHouse(ctx, a.cfg.ClickHouse, func(conn driver.Conn) error {
			l := c.open(conn, db, key)
			if verify {
				return l.VerifyTo(ctx, cmd.OutOrStdout(), anc)
			}
			return l.AnchorTo(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), out)
		})
	}
	verify := &cobra.Command{
		Use: "verify [--anchor FILE]", Short: c.verifyShort, Long: c.verifyLong, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd, true) },
	}
	verify.Flags().StringVar(&anchorFile, "anchor", "", c.anchorUsage)
	anchor := &cobra.Command{
		Use: "anchor [--out FILE]", Short: c.anchorShort, Long: c.anchorLong, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd, false) },
	}
	anchor.Flags().StringVar(&out, "out", "", "append the anchor to this file instead of printing it")
	return []*cobra.Command{verify, anchor, newInitKeyCmd(c.log, func() string { return *c.keyFile })}
}

// newAuditChainCmds are 'shukei audit verify', 'anchor' and 'init-key'.
func newAuditChainCmds(a *app) []*cobra.Command {
	return newChainCmds(a, chainCmds{
		log:     chain.AuditLog,
		keyFile: &a.cfg.Audit.KeyFile, key: &a.cfg.Audit.Key,
		verifyShort: "Verify the audit log's chain with audit.key_file, and against the latest anchor in FILE",
		verifyLong: `verify walks the whole audit log: sequences without a gap, a repeat or a fork, each record
linked to the one before, each keyed MAC checked with audit.key_file, unkeyed (legacy) records
only before the first keyed one. With --anchor it also checks the latest anchor of this
database in FILE ('shukei audit anchor'): the anchored record must still be in the chain with
the anchored sequence and MAC, so an edit, insertion, deletion, reordering or truncation up to
it is found even if done with full write access to ClickHouse. Exits non-zero on any failure.`,
		anchorUsage: "anchor file ('shukei audit anchor --out'): also check the chain holds its latest anchor",
		anchorShort: "Verify the audit log and append its head (sequence and MAC) as one JSON line to FILE, or print it",
		anchorLong: `anchor verifies the audit log with audit.key_file and writes its head — the last record's
sequence and MAC — as one JSON line: appended to FILE with --out, else printed (for a ticketing
system). Keep anchors outside ClickHouse: 'shukei audit verify --anchor FILE' then finds any
rewrite up to the anchored head. The query service also anchors every audit.anchor_every to
audit.anchor_file.`,
		open: func(conn driver.Conn, db string, key []byte) chainLog { return audit.New(conn, db, audit.WithKey(key)) },
	})
}

func newLedgerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Check the privacy-budget ledger's chains: verify, anchor their heads, make the key",
	}
	cmd.AddCommand(newChainCmds(a, chainCmds{
		log:     chain.LedgerLog,
		keyFile: &a.cfg.Ledger.KeyFile, key: &a.cfg.Ledger.Key,
		verifyShort: "Verify every purpose's ledger chain with ledger.key_file, and against the latest anchor in FILE",
		verifyLong: `verify walks every purpose's chain of the budget ledger: sequences without a gap, a repeat or
a fork, each entry linked to the one before, each keyed MAC checked with ledger.key_file,
unkeyed (legacy) entries only before the first keyed one. With --anchor it also checks the
latest anchor of this database in FILE ('shukei ledger anchor'): each anchored purpose's chain
must still hold the anchored entry with its sequence and MAC, so a deleted charge (a refund),
an edit, insertion, reordering or truncation up to it is found even if done with full write
access to ClickHouse. Exits non-zero on any failure.`,
		anchorUsage: "anchor file ('shukei ledger anchor --out'): also check the chains hold its latest anchor",
		anchorShort: "Verify the ledger and append every purpose's chain head as one JSON line to FILE, or print it",
		anchorLong: `anchor verifies every purpose's chain of the budget ledger with ledger.key_file and writes
their heads — each chain's last sequence and MAC — as one JSON line: appended to FILE with
--out, else printed (for a ticketing system). The aggregator also anchors every
ledger.anchor_every to ledger.anchor_file.`,
		open: func(conn driver.Conn, db string, key []byte) chainLog { return ledger.New(conn, db).WithKey(key) },
	})...)
	return cmd
}
