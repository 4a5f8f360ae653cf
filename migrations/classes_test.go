package migrations_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/migrations"
)

// The rejections table's class column is an enum of the rejection classes' names at their
// values (event.Class): the processor writes Class.String(), so a class's name and value are
// both fixed by the table.
func TestRejectionClassesAreEvents(t *testing.T) {
	ms, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	enum := regexp.MustCompile(`(?m)^\s*class\s+Enum8\(([^)]*)\)`)
	var found string
	for _, m := range ms {
		if strings.Contains(m.SQL, ".rejections") {
			if e := enum.FindStringSubmatch(m.SQL); e != nil {
				found = e[1]
			}
		}
	}
	if found == "" {
		t.Fatal("no class enum of the rejections table in the migrations")
	}
	for _, c := range []event.Class{event.ClassInputData, event.ClassMalformed, event.ClassPolicy, event.ClassDuplicate} {
		if want := fmt.Sprintf("'%s' = %d", c, c); !strings.Contains(found, want) {
			t.Errorf("the rejections' class enum (%s) lacks %s", found, want)
		}
	}
}
