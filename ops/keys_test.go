package ops

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shukei/shukei/config"
)

// A role's key comes from its own file (refused when group or others may read it) or value,
// else from the users key; the users it derives are its own, with passwords no other role's
// key gives (promise 16).
func TestRoleKeys(t *testing.T) {
	dir := t.TempDir()
	usersKey := strings.Repeat("ab", 32)
	cfg := config.Default()
	cfg.ClickHouse.UsersKey = usersKey
	fromUsers, err := RoleKey(cfg, "collector")
	if err != nil || len(fromUsers) != 32 {
		t.Fatalf("role key from the users key: %x %v", fromUsers, err)
	}
	// The role's own key file, as 'shukei users key collector' prints it.
	file := filepath.Join(dir, "collector.key")
	if err := os.WriteFile(file, []byte(hex.EncodeToString(fromUsers)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	own := config.Default()
	own.ClickHouse.RoleKeyFile = file
	if _, err := RoleKey(own, "collector"); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Errorf("a role key file of mode 0644 was accepted: %v", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := RoleKey(own, "collector")
	if err != nil || !bytes.Equal(k, fromUsers) {
		t.Fatalf("role key from its file: %x %v, want %x", k, err, fromUsers)
	}
	c, err := RoleClickHouse(own, "collector", "", slog.New(slog.DiscardHandler))
	if err != nil || c.Username != own.ClickHouse.Database+"_collector" || c.Password == "" || c.DefaultDatabase != own.ClickHouse.Database+"_registry" {
		t.Errorf("collector's settings: %+v %v", c, err)
	}
	p, err := RoleClickHouse(cfg, "processor", "", slog.New(slog.DiscardHandler))
	if err != nil || p.Password == c.Password {
		t.Errorf("the processor's password equals the collector's: %v", err)
	}
	if _, err := RoleClickHouse(own, "collector", "_read", slog.New(slog.DiscardHandler)); err == nil {
		t.Error("the collector has a user it should not")
	}
	bad := config.Default()
	bad.ClickHouse.RoleKey = "not hex"
	if _, err := RoleKey(bad, "query"); err == nil {
		t.Error("a role key that is not hex was accepted")
	}
	// No key at all: the administrator's settings (a development setup), said in the log.
	none := config.Default()
	none.Anonymizer.MasterKey, none.Anonymizer.MasterKeyFile = "", ""
	if c, err := RoleClickHouse(none, "query", "", slog.New(slog.DiscardHandler)); err != nil || c.Username != none.ClickHouse.Username {
		t.Errorf("without keys: %+v %v", c, err)
	}
}
