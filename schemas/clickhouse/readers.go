package clickhouse

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/schemas/policy"
)

// Reader is the read-only ClickHouse user of one purpose (DESIGN.md §5, defence in depth):
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

// Readers returns the reader of every purpose of database prefix db. Passwords are derived
// from the master key, so 'shukei migrate' (which writes them) and the query service (which
// uses them) agree without storing a secret anywhere else.
func Readers(db string, master *pseudonym.MasterKey) []Reader {
	var out []Reader
	for _, p := range policy.Purposes() {
		name := p.String()
		r := Reader{
			Purpose:  name,
			User:     db + "_" + name + "_reader",
			Database: db + "_" + name,
			Password: hex.EncodeToString(master.Derive("clickhouse-reader/" + db + "/" + name))[:32],
		}
		if gate.Gated(name) {
			// Its aggregate reports read the purpose's gated atoms (gate/gate.go).
			r.Allow = []string{r.Database, gate.DB(db, name)}
		}
		out = append(out, r)
	}
	return out
}

// UsersFile renders the users.d file that declares the readers: each with its password's
// SHA-256, the networks it may connect from, a read-only profile and its one database.
func UsersFile(readers []Reader, networks []string) ([]byte, error) {
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
		// 2: reads only, but the client may still send settings (clickhouse-go does).
		Readonly         int `xml:"readonly"`
		MaxExecutionTime int `xml:"max_execution_time"`
		MaxResultRows    int `xml:"max_result_rows"`
		MaxMemoryUsage   int `xml:"max_memory_usage"`
	}
	type doc struct {
		XMLName  xml.Name  `xml:"yandex"`
		Comment  string    `xml:",comment"`
		Profiles []profile `xml:"profiles>x"`
		Users    []user    `xml:"users>x"`
	}
	if len(networks) == 0 {
		return nil, fmt.Errorf("the purpose readers need at least one network to connect from")
	}
	d := doc{
		Comment: " Written by 'shukei migrate': one read-only user per purpose database (DESIGN.md §5). Do not edit; run migrate again. ",
		Profiles: []profile{{XMLName: xml.Name{Local: "shukei_reader"}, Readonly: 2, MaxExecutionTime: 30,
			MaxResultRows: 1_000_000, MaxMemoryUsage: 2_000_000_000}},
	}
	for _, r := range readers {
		sum := sha256.Sum256([]byte(r.Password))
		d.Users = append(d.Users, user{XMLName: xml.Name{Local: r.User}, Password: hex.EncodeToString(sum[:]),
			Networks: network{IP: networks}, Profile: "shukei_reader", Quota: "default", Allow: allow{Database: r.databases()}})
	}
	b, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}

// UsersFileName is the file of database prefix db in the server's users.d directory.
func UsersFileName(db string) string { return db + "-readers.xml" }

// WriteUsers writes the readers' users.d file into dir atomically (the server reloads its
// users within seconds) and returns its path.
func WriteUsers(dir, db string, readers []Reader, networks []string) (string, error) {
	b, err := UsersFile(readers, networks)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, UsersFileName(db))
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".readers-*.tmp")
	if err != nil {
		return "", fmt.Errorf("write the purpose readers into %s: %w", dir, err)
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

// OpenReader connects as r with the other options of base (addresses, timeouts), waiting up
// to wait for the server to load a users file written just before.
func OpenReader(ctx context.Context, base *ch.Options, r Reader, wait time.Duration) (driver.Conn, error) {
	opts := *base
	opts.Auth = ch.Auth{Database: r.Database, Username: r.User, Password: r.Password}
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
			return nil, fmt.Errorf("connect as the %s reader %s (did 'shukei migrate' write its users.d file, with clickhouse.users_dir set?): %w", r.Purpose, r.User, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
