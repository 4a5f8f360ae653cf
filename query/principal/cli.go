package principal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shukei/shukei/audit"
)

// Registration is a principal to add as 'shukei principals add' states it: the grant's
// purposes comma-separated, its expiry a date, and where its token goes.
type Registration struct {
	ID          string
	Kind        string
	ContractRef string
	Purposes    string // comma-separated
	Expires     string // YYYY-MM-DD the grant ends; "" never
	Approver    bool   // grant RoleBreakGlassApprover
	TokenFile   string // write the token to this file (mode 0600) instead of printing it
	ExistOK     bool   // with TokenFile: succeed without change when the principal exists alike
}

// Principal is the principal r describes, or why r cannot be registered (a bad date, ExistOK
// without TokenFile). Store.Add validates the rest.
func (r Registration) Principal() (Principal, error) {
	p := Principal{ID: r.ID, Kind: r.Kind, ContractRef: r.ContractRef, Purposes: splitList(r.Purposes)}
	if r.Approver {
		p.Roles = []string{RoleBreakGlassApprover}
	}
	if r.Expires != "" {
		t, err := time.Parse("2006-01-02", r.Expires)
		if err != nil {
			return p, fmt.Errorf("--expires %q: want YYYY-MM-DD", r.Expires)
		}
		p.Expires = t
	}
	if r.ExistOK && r.TokenFile == "" {
		return p, errors.New("--exist-ok needs --token-file: a principal that already exists has no token to print")
	}
	return p, nil
}

// Register adds r's principal and says so on w, with its token shown once, or written to
// r.TokenFile (checked writable before the principal exists). With r.ExistOK, a principal that
// already exists with the same kind, purposes and roles, and whose token file is not empty,
// is left as it is; one that differs is an error.
func (s *Store) Register(ctx context.Context, w io.Writer, r Registration) error {
	p, err := r.Principal()
	if err != nil {
		return err
	}
	if r.ExistOK {
		old, err := s.Get(ctx, p.ID)
		if err == nil {
			if st, ferr := os.Stat(r.TokenFile); ferr != nil || st.Size() == 0 {
				return fmt.Errorf("%s exists but its token file %s is missing or empty: disable it and add another, or rotate its token", p.ID, r.TokenFile)
			}
			if old.Kind != p.Kind || !sameSet(old.Purposes, p.Purposes) || !sameSet(old.Roles, p.Roles) {
				return fmt.Errorf("%s exists as a %s for %s: not changed (add with the same kind, purposes and roles, or manage it by hand)",
					p.ID, old.Kind, strings.Join(old.Purposes, ", "))
			}
			fmt.Fprintf(w, "%s exists (%s) for %s; its token is in %s: nothing changed\n", p.ID, old.Kind, strings.Join(old.Purposes, ", "), r.TokenFile)
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if r.TokenFile != "" {
		// Fail before the principal exists if the file cannot be written.
		if err := os.WriteFile(r.TokenFile, nil, 0o600); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	tok, err := s.Add(ctx, p)
	if err != nil {
		return err
	}
	roles := ""
	if len(p.Roles) > 0 {
		roles = ", roles " + strings.Join(p.Roles, ", ")
	}
	if r.TokenFile != "" {
		if err := os.WriteFile(r.TokenFile, []byte(tok), 0o600); err != nil {
			return fmt.Errorf("--token-file: %w (the principal %s was added; disable it and add another)", err, p.ID)
		}
		fmt.Fprintf(w, "added %s (%s) for %s%s\ntoken written to %s\n", p.ID, p.Kind, strings.Join(p.Purposes, ", "), roles, r.TokenFile)
		return nil
	}
	fmt.Fprintf(w, "added %s (%s) for %s%s\ntoken (shown once): %s\n", p.ID, p.Kind, strings.Join(p.Purposes, ", "), roles, tok)
	return nil
}

// DisableTo disables principal id — its token stops working at once — and says so on w
// ('shukei principals disable').
func (s *Store) DisableTo(ctx context.Context, w io.Writer, id string) error {
	_, err := s.Update(ctx, id, func(x *Principal) error {
		x.Disabled = true
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "disabled %s\n", id)
	return nil
}

// ListTo writes every principal with its grant (List, WriteList): 'shukei principals list'.
func (s *Store) ListTo(ctx context.Context, w io.Writer) error {
	ps, err := s.List(ctx)
	if err != nil {
		return err
	}
	return WriteList(w, ps)
}

// WriteList writes ps (Store.List) as a table of their grants, every text Shown escaped
// ('shukei principals list').
func WriteList(w io.Writer, ps []Principal) error {
	shown := audit.Shown
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
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
}

// splitList is the non-empty, trimmed items of a comma-separated list.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// sameSet says whether a and b hold the same items, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
