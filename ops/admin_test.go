package ops

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
)

// 'shukei keys init' writes a master key only its owner may read, in a directory it makes,
// and never overwrites one.
func TestInitMasterKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "master.key")
	var out bytes.Buffer
	if err := InitMasterKey(&out, path); err != nil {
		t.Fatal(err)
	}
	if out.String() != "wrote a new master key to "+path+"\n" {
		t.Errorf("said %q", out.String())
	}
	if _, err := pseudonym.LoadMasterKey(path, ""); err != nil {
		t.Errorf("the key written does not load: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v %v", st.Mode(), err)
	}
	before, _ := os.ReadFile(path)
	out.Reset()
	if err := InitMasterKey(&out, path); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) || out.String() != "master key exists: "+path+" (left as it is)\n" {
		t.Errorf("a second init: %q, key changed: %t", out.String(), !bytes.Equal(before, after))
	}
}

// 'shukei keys compose' writes docker-compose.yml's secrets once, mode 0600: every role's key
// derived from the users key it writes, each chain its own key.
func TestWriteComposeEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	var out bytes.Buffer
	if err := WriteComposeEnv(&out, path); err != nil {
		t.Fatal(err)
	}
	if out.String() != "wrote the stack's secrets to "+path+"\n" {
		t.Errorf("said %q", out.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("env file: %v %v", st, err)
	}
	b, _ := os.ReadFile(path)
	env := map[string]string{}
	var names []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")[1:] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || v == "" {
			t.Fatalf("line %q", l)
		}
		env[k] = v
		names = append(names, k)
	}
	want := []string{"SHUKEI_MASTER_KEY", "SHUKEI_CLICKHOUSE_PASSWORD", "SHUKEI_USERS_KEY"}
	for _, r := range migrations.Roles {
		want = append(want, "SHUKEI_"+strings.ToUpper(r)+"_KEY")
	}
	want = append(want, "SHUKEI_AUDIT_KEY", "SHUKEI_LEDGER_KEY", "GRAFANA_ADMIN_PASSWORD")
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("variables %v, want %v", names, want)
	}
	if _, err := pseudonym.ParseMasterKey(env["SHUKEI_MASTER_KEY"]); err != nil {
		t.Errorf("master key: %v", err)
	}
	uk, _ := hex.DecodeString(env["SHUKEI_USERS_KEY"])
	for _, r := range migrations.Roles {
		if got := env["SHUKEI_"+strings.ToUpper(r)+"_KEY"]; got != hex.EncodeToString(migrations.RoleKey(uk, "shukei", r)) {
			t.Errorf("%s's key is not derived from the users key", r)
		}
	}
	for _, k := range []string{"SHUKEI_AUDIT_KEY", "SHUKEI_LEDGER_KEY"} {
		if _, err := chain.ParseKey(env[k]); err != nil || env[k] == env["SHUKEI_MASTER_KEY"] || env[k] == env["SHUKEI_USERS_KEY"] {
			t.Errorf("%s: %v", k, err)
		}
	}
	if env["SHUKEI_AUDIT_KEY"] == env["SHUKEI_LEDGER_KEY"] {
		t.Error("the audit log and the ledger share a chain key")
	}
	if len(env["SHUKEI_CLICKHOUSE_PASSWORD"]) != 32 || len(env["GRAFANA_ADMIN_PASSWORD"]) != 24 {
		t.Errorf("passwords %q %q", env["SHUKEI_CLICKHOUSE_PASSWORD"], env["GRAFANA_ADMIN_PASSWORD"])
	}
	out.Reset()
	if err := WriteComposeEnv(&out, path); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, b) || out.String() != path+" exists (left as it is)\n" {
		t.Errorf("a second compose: %q, file changed: %t", out.String(), !bytes.Equal(again, b))
	}
}

// 'shukei users key' and 'credentials' print a role's key and its users' passwords: the same
// the role derives from that key.
func TestWriteRoleKeyAndCredentials(t *testing.T) {
	cfg := config.Default()
	var out bytes.Buffer
	if err := WriteRoleKey(&out, cfg, "query"); err == nil || err.Error() != "no users key: set clickhouse.users_key_file" {
		t.Errorf("without a users key: %v", err)
	}
	if err := WriteRoleCredentials(&out, cfg, "query"); err == nil || err.Error() != "no key: set clickhouse.users_key_file or clickhouse.role_key_file" {
		t.Errorf("without a key: %v", err)
	}
	cfg.ClickHouse.UsersKey = strings.Repeat("ab", 32)
	for _, write := range []func() error{
		func() error { return WriteRoleKey(&out, cfg, "admin") },
		func() error { return WriteRoleCredentials(&out, cfg, "admin") },
	} {
		if err := write(); err == nil || !strings.HasPrefix(err.Error(), `no role "admin" (roles: `) {
			t.Errorf("an unknown role: %v", err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("printed on errors: %q", out.String())
	}

	if err := WriteRoleKey(&out, cfg, "query"); err != nil {
		t.Fatal(err)
	}
	key, err := RoleKey(cfg, "query")
	if err != nil || out.String() != hex.EncodeToString(key)+"\n" {
		t.Fatalf("role key %q, want %x (%v)", out.String(), key, err)
	}
	out.Reset()
	if err := WriteRoleCredentials(&out, cfg, "query"); err != nil {
		t.Fatal(err)
	}
	users, _ := migrations.RoleUsers(cfg.ClickHouse.Database, "query", key)
	var want strings.Builder
	for _, u := range users {
		want.WriteString(u.Name + " " + u.Password + "\n")
	}
	if out.String() != want.String() {
		t.Errorf("credentials:\n%s\nwant\n%s", out.String(), want.String())
	}
}
