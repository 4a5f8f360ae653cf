package migrations

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/shukei/shukei/databases"
	"github.com/shukei/shukei/gate"
)

// Mode is what a role's ClickHouse user may do in its databases.
type Mode string

const (
	// ReadOnly users run in a read-only profile: no INSERT, no DDL, no settings that lift it.
	ReadOnly Mode = "read"
	// Write users may insert into their databases (and, on ClickHouse 18.16, which lets a
	// query lift allow_ddl, also alter or drop their tables: promise 16 says so).
	Write Mode = "write"
	// Delete users may also delete rows and drop partitions (ALTER … DELETE, DROP PARTITION):
	// retention, which deletes tenants and expired data.
	Delete Mode = "delete"
)

// Roles are the long-running roles with ClickHouse users of their own (promise 16).
var Roles = []string{"collector", "processor", "aggregator", "query", "retention"}

// User is one ClickHouse user of a role.
type User struct {
	Role      string
	Name      string // <db>_<role>[_read]
	Mode      Mode
	Databases []string // the first is its default database
	Password  string
	// Purpose is set on the query service's purpose readers.
	Purpose string
}

// RoleKey derives a role's key from the users key (clickhouse.users_key_file, held by the
// administrator only): the role's users' passwords are derived from it, so a role that is
// given its own key (clickhouse.role_key_file) can connect as its users and as no other.
func RoleKey(usersKey []byte, db, role string) []byte {
	m := hmac.New(sha256.New, usersKey)
	fmt.Fprintf(m, "shukei clickhouse role key\x00%s\x00%s", db, role)
	return m.Sum(nil)
}

// password derives a user's password from its role's key.
func password(roleKey []byte, user string) string {
	m := hmac.New(sha256.New, roleKey)
	fmt.Fprintf(m, "shukei clickhouse password\x00%s", user)
	return hex.EncodeToString(m.Sum(nil))[:40]
}

// RoleUsers returns the ClickHouse users of role over database prefix db, with their
// passwords derived from the role's key: the matrix of promise 16.
func RoleUsers(db, role string, roleKey []byte) ([]User, error) {
	marts := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, databases.Purpose(db, n))
		}
		return out
	}
	all := databases.Marts
	var us []User
	add := func(suffix string, mode Mode, dbs ...string) {
		name := db + "_" + role + suffix
		us = append(us, User{Role: role, Name: name, Mode: mode, Databases: dbs, Password: password(roleKey, name)})
	}
	switch role {
	case "collector":
		add("", ReadOnly, databases.Registry(db))
	case "processor":
		add("", Write, append([]string{databases.Store(db)}, marts(all...)...)...)
		add("_read", ReadOnly, databases.Registry(db), databases.Keys(db))
	case "aggregator":
		w := []string{databases.Aggregator(db), databases.Purpose(db, "external_aggregate")}
		for _, p := range gate.Purposes {
			w = append(w, gate.DB(db, p.String()))
		}
		add("", Write, w...)
		add("_read", ReadOnly, append([]string{databases.Registry(db), databases.Keys(db)}, marts("service_improvement", "marketing")...)...)
	case "query":
		add("", Write, databases.Audit(db), databases.BreakGlass(db))
		add("_read", ReadOnly, databases.Principals(db), databases.Registry(db))
		for _, r := range Readers(db, roleKey) {
			us = append(us, User{Role: role, Name: r.User, Mode: ReadOnly, Databases: r.databases(), Password: r.Password, Purpose: r.Purpose})
		}
	case "retention":
		// It deletes tenants' rows and expired data; it appends its receipts to the audit log
		// as a user of its own that may not delete (a user that may delete could drop the log).
		add("", Delete, append([]string{databases.Store(db), databases.Registry(db), databases.Keys(db), databases.Aggregator(db), databases.BreakGlass(db)}, marts(all...)...)...)
		add("_audit", Write, databases.Audit(db))
		add("_read", ReadOnly, databases.Purpose(db, "external_aggregate"))
	default:
		return nil, fmt.Errorf("no role %q (roles: %v)", role, Roles)
	}
	return us, nil
}

// AllUsers returns every role's users, their keys derived from the users key.
func AllUsers(db string, usersKey []byte) []User {
	var out []User
	for _, role := range Roles {
		us, _ := RoleUsers(db, role, RoleKey(usersKey, db, role))
		out = append(out, us...)
	}
	return out
}

// Find returns the user of role named db_role+suffix.
func Find(users []User, name string) (User, bool) {
	i := slices.IndexFunc(users, func(u User) bool { return u.Name == name })
	if i < 0 {
		return User{}, false
	}
	return users[i], true
}

// ParseRole returns the role named s, one of Roles.
func ParseRole(s string) (string, error) {
	if slices.Contains(Roles, s) {
		return s, nil
	}
	return "", fmt.Errorf("no role %q (roles: %s)", s, strings.Join(Roles, ", "))
}

// WriteMatrix prints every role's users over database prefix db as a table: the role, the
// user, its mode and its databases (the matrix of promise 16). Passwords are not shown.
func WriteMatrix(w io.Writer, db string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tUSER\tMODE\tDATABASES")
	for _, role := range Roles {
		// Any key lists the same names and databases.
		us, err := RoleUsers(db, role, []byte("list"))
		if err != nil {
			return err
		}
		for _, u := range us {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Role, u.Name, u.Mode, strings.Join(u.Databases, ","))
		}
	}
	return tw.Flush()
}
