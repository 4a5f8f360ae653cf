package ops

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
)

// The administrator's keys ('shukei keys', 'shukei users'): the master key file, the secrets
// of docker-compose.yml, and each role's key and ClickHouse credentials (promise 16).

// InitMasterKey writes a new random master key, as hex, to a new file at path (mode 0600, its
// directory made 0700 if missing) and says so on out. A file already at path is left as it is
// (and out says that): losing the key makes every tenant's pseudonymisation root unreadable.
func InitMasterKey(out io.Writer, path string) error {
	if _, err := os.Stat(path); err == nil {
		fmt.Fprintf(out, "master key exists: %s (left as it is)\n", path)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := writeNew(path, pseudonym.NewMasterKeyText()+"\n"); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote a new master key to %s\n", path)
	return nil
}

// WriteComposeEnv writes the secrets docker-compose.yml reads to a new file at path (.env, mode
// 0600) and says so on out: a new master key, the administrator's ClickHouse password, the
// users key and each role's key derived from it (its database is "shukei"), the audit log's
// and the ledger's chain keys, and Grafana's admin password. A file already at path is left as
// it is (and out says that).
func WriteComposeEnv(out io.Writer, path string) error {
	if _, err := os.Stat(path); err == nil {
		fmt.Fprintf(out, "%s exists (left as it is)\n", path)
		return nil
	}
	if err := writeNew(path, composeEnv()); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote the stack's secrets to %s\n", path)
	return nil
}

// composeEnv is the content of a new .env for docker-compose.yml, every secret in it new.
func composeEnv() string {
	usersKey := pseudonym.NewMasterKeyText()
	uk, _ := hex.DecodeString(usersKey)
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by 'shukei keys compose': the secrets of docker-compose.yml. Mode 0600; keep it out of the repository.\n")
	fmt.Fprintf(&b, "SHUKEI_MASTER_KEY=%s\n", pseudonym.NewMasterKeyText())
	fmt.Fprintf(&b, "SHUKEI_CLICKHOUSE_PASSWORD=%s\n", pseudonym.NewMasterKeyText()[:32])
	fmt.Fprintf(&b, "SHUKEI_USERS_KEY=%s\n", usersKey)
	for _, role := range migrations.Roles {
		// docker-compose.yml's database is "shukei".
		fmt.Fprintf(&b, "SHUKEI_%s_KEY=%s\n", strings.ToUpper(role), hex.EncodeToString(migrations.RoleKey(uk, "shukei", role)))
	}
	// The chains' own keys (promise 17): the audit log's, the ledger's.
	fmt.Fprintf(&b, "SHUKEI_AUDIT_KEY=%s\n", chain.NewKeyText())
	fmt.Fprintf(&b, "SHUKEI_LEDGER_KEY=%s\n", chain.NewKeyText())
	fmt.Fprintf(&b, "GRAFANA_ADMIN_PASSWORD=%s\n", pseudonym.NewMasterKeyText()[:24])
	return b.String()
}

// writeNew writes content to a new file at path, mode 0600; it never overwrites one.
func writeNew(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteRoleKey prints the key of role (one of migrations.Roles), as hex, for the role's
// clickhouse.role_key_file: derived from the users key (UsersKey), which must be configured.
func WriteRoleKey(out io.Writer, cfg config.Config, role string) error {
	role, err := migrations.ParseRole(role)
	if err != nil {
		return err
	}
	uk, err := UsersKey(cfg)
	if err != nil {
		return err
	}
	if uk == nil {
		return fmt.Errorf("no users key: set clickhouse.users_key_file")
	}
	fmt.Fprintln(out, hex.EncodeToString(migrations.RoleKey(uk, cfg.ClickHouse.Database, role)))
	return nil
}

// WriteRoleCredentials prints the ClickHouse users of role (one of migrations.Roles) and their
// passwords, one "user password" a line, from the role's key (RoleKey).
func WriteRoleCredentials(out io.Writer, cfg config.Config, role string) error {
	role, err := migrations.ParseRole(role)
	if err != nil {
		return err
	}
	k, err := RoleKey(cfg, role)
	if err != nil {
		return err
	}
	if k == nil {
		return fmt.Errorf("no key: set clickhouse.users_key_file or clickhouse.role_key_file")
	}
	us, err := migrations.RoleUsers(cfg.ClickHouse.Database, role, k)
	if err != nil {
		return err
	}
	for _, u := range us {
		fmt.Fprintf(out, "%s %s\n", u.Name, u.Password)
	}
	return nil
}
