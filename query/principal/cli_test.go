package principal

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// A registration's flags make its principal: purposes split and trimmed, the approver role,
// the expiry date; a bad date, and --exist-ok without a token file, are refused before any
// connection.
func TestRegistrationPrincipal(t *testing.T) {
	p, err := Registration{ID: "dpo", Kind: Employee, Purposes: " support, ,marketing ", Approver: true, Expires: "2099-01-02"}.Principal()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Purposes, []string{"support", "marketing"}) || !slices.Equal(p.Roles, []string{RoleBreakGlassApprover}) ||
		!p.Expires.Equal(time.Date(2099, 1, 2, 0, 0, 0, 0, time.UTC)) || p.ID != "dpo" || p.Kind != Employee {
		t.Errorf("principal %+v", p)
	}
	if p, err := (Registration{ID: "x", Purposes: ""}).Principal(); err != nil || p.Purposes != nil || p.Roles != nil || !p.Expires.IsZero() {
		t.Errorf("empty registration: %+v %v", p, err)
	}
	if _, err := (Registration{ID: "x", Expires: "2099-13-01"}).Principal(); err == nil || err.Error() != `--expires "2099-13-01": want YYYY-MM-DD` {
		t.Errorf("bad date: %v", err)
	}
	if _, err := (Registration{ID: "x", ExistOK: true}).Principal(); err == nil || !strings.HasPrefix(err.Error(), "--exist-ok needs --token-file") {
		t.Errorf("exist-ok without a token file: %v", err)
	}
	if !sameSet([]string{"b", "a"}, []string{"a", "b"}) || sameSet([]string{"a"}, []string{"a", "a"}) || !sameSet(nil, []string{}) {
		t.Error("sameSet")
	}
}

// WriteList: one row a principal, "-" for no roles or expiry, text escaped.
func TestWriteList(t *testing.T) {
	var b strings.Builder
	err := WriteList(&b, []Principal{
		{ID: "hana", Kind: Employee, Purposes: []string{"support", "marketing"}, Roles: []string{RoleBreakGlassApprover}},
		{ID: "acme", Kind: Contractor, Purposes: []string{"interview_selection"}, ContractRef: "C-1\x1b[2K", Expires: time.Date(2099, 1, 2, 0, 0, 0, 0, time.UTC), Disabled: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"ID KIND PURPOSES ROLES CONTRACT EXPIRES DISABLED",
		"hana employee support,marketing breakglass_approver - false",
		`acme contractor interview_selection - C-1\x1b[2K 2099-01-02 true`,
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
