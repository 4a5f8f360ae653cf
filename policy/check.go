package policy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// CheckEmbedded checks the policy versions built into the binary and prints one line each:
// its version, title, how many purposes and categories it has, and its k.
func CheckEmbedded(w io.Writer) error {
	v, err := Embedded()
	if err != nil {
		return err
	}
	for n := 1; n <= v.Len(); n++ {
		p := v.Policy(n)
		fmt.Fprintf(w, "ok  v%d %q: %d purposes, %d categories, k=%d\n", p.Version, p.Title, len(p.Purposes), len(p.Categories), p.K)
	}
	return nil
}

// CheckFiles parses and validates each policy file and prints, for each, "ok" with its version
// and title, or "bad" with every problem found. The error joins those of the bad files (nil
// when all are good); it has been printed already.
func CheckFiles(w io.Writer, paths []string) error {
	var errs []error
	for _, f := range paths {
		b, err := os.ReadFile(f)
		if err == nil {
			var p *Policy
			if p, err = Parse(b); err == nil {
				fmt.Fprintf(w, "ok  %s: v%d %q\n", f, p.Version, p.Title)
				continue
			}
		}
		fmt.Fprintf(w, "bad %s:\n%v\n", f, err)
		errs = append(errs, fmt.Errorf("%s: %w", f, err))
	}
	return errors.Join(errs...)
}

// WriteStatus prints the versions as a table: when each was enacted, whether it requires
// consent, and since when it is in force (version 1 from the beginning; "not activated" for
// a version not activated yet).
func (v *Versions) WriteStatus(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tENACTED\tCONSENT\tIN FORCE FROM\t")
	for n := 1; n <= v.Len(); n++ {
		p := v.Policy(n)
		from := "not activated"
		if at, ok := v.Activation(n); ok {
			from = "the beginning"
			if !at.IsZero() {
				from = at.UTC().Format(time.RFC3339)
			}
		}
		consent := "not needed"
		if p.RequiresConsent {
			consent = "required"
		}
		fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t\n", p.Version, p.Enacted.Format(time.DateOnly), consent, from)
	}
	return tw.Flush()
}

// ParseVersion reads a policy version number as an operator writes it: 2 or v2.
func ParseVersion(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "v"))
	if err != nil {
		return 0, fmt.Errorf("version %q: want a number such as 2 (or v2)", s)
	}
	return n, nil
}
