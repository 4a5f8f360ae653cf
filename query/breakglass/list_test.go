package breakglass

import (
	"strings"
	"testing"
	"time"
)

// WriteList: one row a grant with its state at now, "-" for what has not happened, every text
// escaped.
func TestWriteList(t *testing.T) {
	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	err := WriteList(&b, []Grant{
		{ID: "bg-1", Principal: "hana", Tenant: "acme", Clause: "3(2)-5", Justification: "police inquiry\u202e ref 7"},
		{ID: "bg-2", Principal: "hana", Tenant: "acme", Clause: "3(2)-6", Justification: "j", ApprovedBy: "dpo",
			ApprovedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), RevokedBy: "dpo\n", RevokedAt: now},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"ID PRINCIPAL TENANT CLAUSE STATE APPROVED BY UNTIL REVOKED BY JUSTIFICATION",
		`bg-1 hana acme 3(2)-5 pending - - - police inquiry\u202e ref 7`,
		`bg-2 hana acme 3(2)-6 revoked dpo 2026-03-04T13:00:00Z dpo\n j`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got\n%s", b.String())
	}
	for i := range want {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != want[i] {
			t.Errorf("line %d: %q, want %q", i, got, want[i])
		}
	}
}
