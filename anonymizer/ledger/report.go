package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/shukei/shukei/audit/chain"
)

// VerifyTo verifies every purpose's chain (VerifyAll), or with anc also that they hold its
// anchored heads (VerifyAnchor), and writes what held to w, a line a chain ('shukei ledger
// verify'). Keyed entries verified without a key are an error: they were not checked.
func (l *Ledger) VerifyTo(ctx context.Context, w io.Writer, anc *chain.Anchor) error {
	var sts []ChainState
	var err error
	if anc != nil {
		sts, err = l.VerifyAnchor(ctx, *anc)
	} else {
		sts, err = l.VerifyAll(ctx)
	}
	if err != nil {
		return err
	}
	keyed := 0
	for _, st := range sts {
		fmt.Fprintf(w, "%s: %d entries, chain intact", st.Purpose, st.Entries)
		if st.Legacy > 0 {
			fmt.Fprintf(w, " (%d unkeyed entries written before the ledger was keyed, as its prefix)", st.Legacy)
		}
		fmt.Fprintln(w)
		keyed += st.Entries - st.Legacy
	}
	fmt.Fprintf(w, "budget ledger verified: %d chains\n", len(sts))
	if anc != nil {
		purposes := make([]string, 0, len(anc.Heads))
		for p := range anc.Heads {
			purposes = append(purposes, p)
		}
		sort.Strings(purposes)
		for _, p := range purposes {
			fmt.Fprintf(w, "anchor of %s holds: %s entry %d is the one anchored\n", anc.At.UTC().Format(time.RFC3339), p, anc.Heads[p].Seq)
		}
	} else if l.key == nil && keyed > 0 {
		return errors.New("no ledger.key_file: the keyed entries were not checked")
	}
	return nil
}

// AnchorTo verifies every chain and saves their heads as an anchor of the ledger's database
// (Anchor): appended to the file at path, with a note of it on note, or printed to w when path
// is "" ('shukei ledger anchor').
func (l *Ledger) AnchorTo(ctx context.Context, w, note io.Writer, path string) error {
	a, err := l.Anchor(ctx, l.db)
	if err != nil {
		return err
	}
	if err := chain.SaveAnchor(w, path, a); err != nil {
		return err
	}
	if path != "" {
		fmt.Fprintf(note, "anchored %d ledger chains to %s\n", len(a.Heads), path)
	}
	return nil
}
