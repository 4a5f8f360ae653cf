package gate_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/shukei/shukei/gate"
)

func TestWriteSeals(t *testing.T) {
	var b bytes.Buffer
	gate.WriteSeals(&b, nil)
	if b.String() != "no week to seal\n" {
		t.Errorf("no seal: %q", b.String())
	}
	b.Reset()
	week := time.Date(2026, 5, 4, 0, 0, 0, 0, time.UTC)
	gate.WriteSeals(&b, []gate.Seal{
		{Purpose: "service_improvement", Week: week, K: 5, Atoms: make([]gate.Atom, 3)},
		{Purpose: "marketing", Week: week.AddDate(0, 0, 7), K: 8},
	})
	want := "sealed service_improvement week 2026-05-04: 3 atoms of at least 5 tenants\n" +
		"sealed marketing week 2026-05-11: 0 atoms of at least 8 tenants\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
