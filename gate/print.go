package gate

import (
	"fmt"
	"io"
	"time"
)

// WriteSeals prints what a sealing pass sealed, one line a seal: its purpose, week, how many
// atoms and their k; "no week to seal" when it sealed none.
func WriteSeals(w io.Writer, seals []Seal) {
	for _, s := range seals {
		fmt.Fprintf(w, "sealed %s week %s: %d atoms of at least %d tenants\n", s.Purpose, s.Week.Format(time.DateOnly), len(s.Atoms), s.K)
	}
	if len(seals) == 0 {
		fmt.Fprintln(w, "no week to seal")
	}
}
