package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shukei/shukei/audit/chain"
)

// ChainState is what walking the chain found.
type ChainState struct {
	Records int
	Legacy  int        // unkeyed records: the prefix written before the chain was keyed
	Head    chain.Head // the last record; {0, ""} for an empty chain
}

// VerifyChain walks the whole chain: sequences 1, 2, … without a gap, a repeat or a fork,
// each record linked to the one before, each keyed link checked with the key, unkeyed links
// only before the first keyed record. It returns what it verified before the first failure.
func (l *Log) VerifyChain(ctx context.Context) (ChainState, error) {
	rs, err := l.read(ctx, "", nil)
	if err != nil {
		return ChainState{}, err
	}
	return l.walk(rs)
}

func (l *Log) walk(rs []Record) (ChainState, error) {
	var st ChainState
	prev, keyed := "", false
	for i, r := range rs {
		switch {
		case r.Seq != uint64(i)+1:
			return st, fmt.Errorf("%w: record %d has sequence %d (a record is missing, repeated or forked)", ErrBroken, i+1, r.Seq)
		case r.PrevHash != prev:
			return st, fmt.Errorf("%w: record %d does not follow record %d (one was deleted, inserted or moved)", ErrBroken, r.Seq, r.Seq-1)
		}
		isKeyed := chain.Keyed(r.Hash)
		if ok, why := chain.Check(l.key, keyed, r.Hash, r.PrevHash, r.fields(isKeyed)...); !ok {
			return st, fmt.Errorf("%w: record %d %s", ErrBroken, r.Seq, why)
		}
		if isKeyed {
			keyed = true
		} else {
			st.Legacy++
		}
		prev = r.Hash
		st.Records++
		st.Head = chain.Head{Seq: r.Seq, MAC: r.Hash}
	}
	return st, nil
}

// Anchor verifies the chain and returns its head as an anchor. A chain that does not verify is
// not anchored: an anchor vouches for what it names.
func (l *Log) Anchor(ctx context.Context) (chain.Anchor, error) {
	st, err := l.VerifyChain(ctx)
	if err != nil {
		return chain.Anchor{}, err
	}
	return chain.Anchor{Log: chain.AuditLog, Database: l.db, At: l.now(), Seq: st.Head.Seq, MAC: st.Head.MAC}, nil
}

// VerifyAnchor verifies the whole chain, and that it still holds the anchored head exactly:
// the record with the anchor's sequence has the anchor's link. With the chain verifying under
// the key, that pins every record up to the head — one edited, inserted, deleted or moved
// before it, or the tail truncated below it, changes or removes that link — and the records
// after it verify too.
func (l *Log) VerifyAnchor(ctx context.Context, a chain.Anchor) (ChainState, error) {
	if a.Log != chain.AuditLog {
		return ChainState{}, fmt.Errorf("the anchor is of the %q log, not the audit log", a.Log)
	}
	rs, err := l.read(ctx, "", nil)
	if err != nil {
		return ChainState{}, err
	}
	st, err := l.walk(rs)
	if err != nil {
		return st, err
	}
	if a.Seq == 0 {
		return st, nil
	}
	at := a.At.UTC().Format(time.RFC3339)
	if uint64(len(rs)) < a.Seq {
		return st, fmt.Errorf("%w: the chain has %d records, the anchor of %s names record %d (the tail was truncated)", ErrBroken, len(rs), at, a.Seq)
	}
	if r := rs[a.Seq-1]; r.Hash != a.MAC {
		return st, fmt.Errorf("%w: record %d is not the one anchored at %s (the chain up to it was rewritten)", ErrBroken, a.Seq, at)
	}
	return st, nil
}

// VerifyTo verifies the whole chain (VerifyChain), or with anc also that it holds that anchored
// head (VerifyAnchor), and writes what held to w ('shukei audit verify'). A failure says how
// many records verified before it. Keyed records verified without a key are an error too:
// they were not checked.
func (l *Log) VerifyTo(ctx context.Context, w io.Writer, anc *chain.Anchor) error {
	var st ChainState
	var err error
	if anc != nil {
		st, err = l.VerifyAnchor(ctx, *anc)
	} else {
		st, err = l.VerifyChain(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w (%d records verified before it)", err, st.Records)
	}
	fmt.Fprintf(w, "audit log verified: %d records, chain intact", st.Records)
	if st.Legacy > 0 {
		fmt.Fprintf(w, " (%d unkeyed records written before the chain was keyed, as its prefix)", st.Legacy)
	}
	fmt.Fprintln(w)
	if anc != nil {
		fmt.Fprintf(w, "anchor of %s holds: record %d is the one anchored\n", anc.At.UTC().Format(time.RFC3339), anc.Seq)
	} else if l.key == nil && st.Records > st.Legacy {
		return errors.New("no audit.key_file: the keyed records were not checked")
	}
	return nil
}

// AnchorTo verifies the chain and saves its head (Anchor): appended to the file at path, with
// a note of it on note, or printed to w when path is "" ('shukei audit anchor').
func (l *Log) AnchorTo(ctx context.Context, w, note io.Writer, path string) error {
	a, err := l.Anchor(ctx)
	if err != nil {
		return err
	}
	if err := chain.SaveAnchor(w, path, a); err != nil {
		return err
	}
	if path != "" {
		fmt.Fprintf(note, "anchored record %d of the audit log to %s\n", a.Seq, path)
	}
	return nil
}
