package migrations_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/shukei/shukei/migrations"
)

func TestParseRole(t *testing.T) {
	for _, r := range migrations.Roles {
		if got, err := migrations.ParseRole(r); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	want := `no role "admin" (roles: collector, processor, aggregator, query, retention)`
	if _, err := migrations.ParseRole("admin"); err == nil || err.Error() != want {
		t.Errorf("ParseRole(admin): %v, want %s", err, want)
	}
}

// The matrix lists every user of every role, with its mode and databases, and no password.
func TestWriteMatrix(t *testing.T) {
	var b bytes.Buffer
	if err := migrations.WriteMatrix(&b, "shukei"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	var users []migrations.User
	for _, role := range migrations.Roles {
		// The key the matrix is made with: its passwords must not show either.
		us, err := migrations.RoleUsers("shukei", role, []byte("list"))
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, us...)
	}
	if len(lines) != 1+len(users) || !regexp.MustCompile(`^ROLE\s+USER\s+MODE\s+DATABASES$`).MatchString(lines[0]) {
		t.Fatalf("want a header and %d users:\n%s", len(users), b.String())
	}
	for i, u := range users {
		if f := strings.Fields(lines[1+i]); len(f) != 4 || f[0] != u.Role || f[1] != u.Name || f[2] != string(u.Mode) || f[3] != strings.Join(u.Databases, ",") {
			t.Errorf("line %d: %q, want %s %s %s %v", 1+i, lines[1+i], u.Role, u.Name, u.Mode, u.Databases)
		}
		if strings.Contains(b.String(), u.Password) {
			t.Errorf("the matrix shows %s's password", u.Name)
		}
	}
	if want := "collector   shukei_collector                   read    shukei_registry"; lines[1] != want {
		t.Errorf("first user: %q, want %q", lines[1], want)
	}
}
