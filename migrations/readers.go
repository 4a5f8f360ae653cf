package migrations

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/policy"
)

// Reader is the read-only ClickHouse user of one purpose (docs/DESIGN.md §6, defence in depth):
// it may read only its purpose's database, so a bug in a report of one purpose cannot read
// another purpose's data, nor the internal event store, nor write anything.
type Reader struct {
	Purpose  string
	User     string
	Database string // its default database
	Password string
	// Allow lists the databases it may read; empty means Database alone.
	Allow []string
}

func (r Reader) databases() []string {
	if len(r.Allow) > 0 {
		return r.Allow
	}
	return []string{r.Database}
}

// Readers returns the reader of every purpose of database prefix db, their passwords derived
// from the query service's role key (RoleKey), so 'shukei migrate' (which declares them) and
// the query service (which connects as them) agree without the master key.
func Readers(db string, queryKey []byte) []Reader {
	var out []Reader
	for _, p := range policy.Purposes() {
		name := p.String()
		r := Reader{
			Purpose:  name,
			User:     db + "_" + name + "_reader",
			Database: db + "_" + name,
		}
		r.Password = password(queryKey, r.User)
		if gate.Gated(name) {
			// Its aggregate reports read the purpose's gated atoms (gate/gate.go).
			r.Allow = []string{r.Database, gate.DB(db, name)}
		}
		out = append(out, r)
	}
	return out
}

// UsersFile renders the users.d file that declares every role's users (promise 16): each with
// its password's SHA-256, the networks it may connect from, its databases, and a profile —
// read-only (readonly=1: no INSERT, no DDL, no table functions — remote(), cluster(), url(),
// file() — and no settings: a SETTINGS clause or SET is refused, settings sent with a query
// over the native protocol are ignored, so prefer_localhost_replica cannot send a read of a
// Distributed table through another node as the cluster's internal user), or
// writer (allow_ddl=0 against accidents; on ClickHouse 18.16 a query may lift it, which the
// promise says).
func UsersFile(users []User, networks []string) ([]byte, error) {
	type network struct {
		IP []string `xml:"ip"`
	}
	type allow struct {
		Database []string `xml:"database"`
	}
	type user struct {
		XMLName  xml.Name
		Password string  `xml:"password_sha256_hex"`
		Networks network `xml:"networks"`
		Profile  string  `xml:"profile"`
		Quota    string  `xml:"quota"`
		Allow    allow   `xml:"allow_databases"`
	}
	type profile struct {
		XMLName xml.Name
		// 1 for readers. Not 2: readonly=2 lets a query change every setting but readonly and
		// allows table functions, and a reader that could name cluster('shukei', <db>, <table>)
		// with prefer_localhost_replica = 0 read the event store and the other purposes' marts
		// through the internal user on a cluster (the second blind cluster attack, promise 19).
		Readonly         int  `xml:"readonly,omitempty"`
		AllowDDL         *int `xml:"allow_ddl,omitempty"`
		MaxExecutionTime int  `xml:"max_execution_time,omitempty"`
		MaxResultRows    int  `xml:"max_result_rows,omitempty"`
		MaxMemoryUsage   int  `xml:"max_memory_usage,omitempty"`
	}
	type doc struct {
		XMLName  xml.Name  `xml:"yandex"`
		Comment  string    `xml:",comment"`
		Profiles []profile `xml:"profiles>x"`
		Users    []user    `xml:"users>x"`
	}
	if len(networks) == 0 {
		return nil, fmt.Errorf("the roles' users need at least one network to connect from")
	}
	noDDL := 0
	d := doc{
		Comment: " Written by 'shukei migrate': every role's ClickHouse users, each allowed only its databases (promise 16). Do not edit; run migrate again. ",
		Profiles: []profile{
			{XMLName: xml.Name{Local: "shukei_reader"}, Readonly: 1, MaxExecutionTime: 30, MaxResultRows: 1_000_000, MaxMemoryUsage: 2_000_000_000},
			{XMLName: xml.Name{Local: "shukei_writer"}, AllowDDL: &noDDL},
			{XMLName: xml.Name{Local: "shukei_deleter"}},
		},
	}
	for _, u := range users {
		sum := sha256.Sum256([]byte(u.Password))
		prof := map[Mode]string{ReadOnly: "shukei_reader", Write: "shukei_writer", Delete: "shukei_deleter"}[u.Mode]
		d.Users = append(d.Users, user{XMLName: xml.Name{Local: u.Name}, Password: hex.EncodeToString(sum[:]),
			Networks: network{IP: networks}, Profile: prof, Quota: "default", Allow: allow{Database: u.Databases}})
	}
	b, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}

// ReaderUsers turns purpose readers into users (for tests that declare readers alone).
func ReaderUsers(readers []Reader) []User {
	var out []User
	for _, r := range readers {
		out = append(out, User{Role: "query", Name: r.User, Mode: ReadOnly, Databases: r.databases(), Password: r.Password, Purpose: r.Purpose})
	}
	return out
}

// UsersFileName is the file of database prefix db in the server's users.d directory.
func UsersFileName(db string) string { return db + "-users.xml" }

// WriteUsers writes the users.d file into dir atomically (the server reloads its users within
// seconds) and returns its path. The file of an older release (<db>-readers.xml) is removed.
func WriteUsers(dir, db string, users []User, networks []string) (string, error) {
	b, err := UsersFile(users, networks)
	if err != nil {
		return "", err
	}
	_ = os.Remove(filepath.Join(dir, db+"-readers.xml"))
	return writeAtomic(dir, UsersFileName(db), b)
}

// writeAtomic writes b as dir/name by a rename (the server reloads users.d within seconds and
// must never read half a file), leaving an unchanged file alone, and returns its path.
func writeAtomic(dir, name string, b []byte) (string, error) {
	path := filepath.Join(dir, name)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".users-*.tmp")
	if err != nil {
		return "", fmt.Errorf("write %s into %s: %w", name, dir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// ClusterGrantFileName is the file of database prefix db granting the cluster's internal user.
func ClusterGrantFileName(db string) string { return db + "-cluster.xml" }

// ClusterGrantFile renders the users.d file that grants user, the cluster's internal user
// (clickhouse.cluster_user: the user remote_servers names), the databases of db that hold
// sharded tables, which a Distributed table's query reads on the other shards — and no other
// database: on ClickHouse 18.16 such a query runs on the other node as this user, not as the
// user who sent it, so this grant bounds what any role reads through another node. The user
// itself (its password, read-only profile and networks) is declared where remote_servers is
// (scripts/cluster.sh); ClickHouse merges this file's allow_databases into it, one element per
// database, named after it, so every Shukei database prefix on the cluster adds its own.
func ClusterGrantFile(db, user string) ([]byte, error) {
	if !validName.MatchString(user) {
		return nil, fmt.Errorf("cluster user %q: want a ClickHouse user name of letters, digits and _", user)
	}
	dbs, err := ShardedDatabases(db)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	fmt.Fprintf(&b, "<!-- Written by 'shukei migrate': the databases of %s the cluster's internal user %s may read on another node's behalf (sharded tables only). Do not edit; run migrate again. -->\n", db, user)
	fmt.Fprintf(&b, "<yandex>\n  <users>\n    <%s>\n      <allow_databases>\n", user)
	for _, d := range dbs {
		fmt.Fprintf(&b, "        <%s>%s</%s>\n", d, d, d)
	}
	fmt.Fprintf(&b, "      </allow_databases>\n    </%s>\n  </users>\n</yandex>\n", user)
	return b.Bytes(), nil
}

var validName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// WriteClusterGrant writes db's grant of the cluster's internal user into dir (see
// ClusterGrantFile) and returns its path.
func WriteClusterGrant(dir, db, user string) (string, error) {
	b, err := ClusterGrantFile(db, user)
	if err != nil {
		return "", err
	}
	return writeAtomic(dir, ClusterGrantFileName(db), b)
}

// OpenReader connects as r with the other options of base (addresses, timeouts), waiting up
// to wait for the server to load a users file written just before.
func OpenReader(ctx context.Context, base *ch.Options, r Reader, wait time.Duration) (driver.Conn, error) {
	conn, err := OpenAs(ctx, base, r.User, r.Password, r.Database, wait)
	if err != nil {
		return nil, fmt.Errorf("connect as the %s reader %s (did 'shukei migrate' write its users.d file, with clickhouse.users_dir set?): %w", r.Purpose, r.User, err)
	}
	return conn, nil
}

// OpenAs connects as user with the other options of base, its default database db, waiting
// up to wait for the server to load a users file written just before.
func OpenAs(ctx context.Context, base *ch.Options, user, password, db string, wait time.Duration) (driver.Conn, error) {
	opts := *base
	opts.Auth = ch.Auth{Database: db, Username: user, Password: password}
	deadline := time.Now().Add(wait)
	for {
		conn, err := ch.Open(&opts)
		if err == nil {
			if err = conn.Ping(ctx); err == nil {
				return conn, nil
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
