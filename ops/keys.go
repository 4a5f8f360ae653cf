package ops

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/audit/chain"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/pipeline/topic"
)

// MasterKey loads the anonymizer's master key (anonymizer.master_key_file or
// anonymizer.master_key).
func MasterKey(c config.Anonymizer) (*pseudonym.MasterKey, error) {
	return pseudonym.LoadMasterKey(c.MasterKeyFile, c.MasterKey)
}

// chainKey parses a key given as a setting's value.
func chainKey(v, what string) ([]byte, error) {
	k, err := chain.ParseKey(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// UsersKey is the administrator's secret every role's key derives from:
// clickhouse.users_key_file, else derived from the master key; nil when neither is set.
func UsersKey(cfg config.Config) ([]byte, error) {
	if f := cfg.ClickHouse.UsersKeyFile; f != "" {
		return chain.LoadKey("clickhouse.users_key_file", f)
	}
	if v := cfg.ClickHouse.UsersKey; v != "" {
		return chainKey(v, "clickhouse.users_key")
	}
	if cfg.Anonymizer.MasterKeyFile == "" && cfg.Anonymizer.MasterKey == "" {
		return nil, nil
	}
	master, err := MasterKey(cfg.Anonymizer)
	if err != nil {
		return nil, err
	}
	return master.Derive("clickhouse-users"), nil
}

// RoleKey is role's key: clickhouse.role_key_file, else derived from the users key; nil when
// no key is configured at all.
func RoleKey(cfg config.Config, role string) ([]byte, error) {
	if f := cfg.ClickHouse.RoleKeyFile; f != "" {
		return chain.LoadKey("clickhouse.role_key_file", f)
	}
	if v := cfg.ClickHouse.RoleKey; v != "" {
		return chainKey(v, "clickhouse.role_key")
	}
	uk, err := UsersKey(cfg)
	if err != nil || uk == nil {
		return nil, err
	}
	return migrations.RoleKey(uk, cfg.ClickHouse.Database, role), nil
}

// RoleClickHouse returns the settings to connect as role's user named <db>_<role><suffix>
// (promise 16). Without any key configured it returns the administrator's settings and says
// so in the log: a development setup, never one docker-compose.yml or 'make demo' makes.
func RoleClickHouse(cfg config.Config, role, suffix string, log *slog.Logger) (config.ClickHouse, error) {
	key, err := RoleKey(cfg, role)
	if err != nil {
		return config.ClickHouse{}, err
	}
	if key == nil {
		log.Warn("no clickhouse.role_key_file, users key or master key: connecting as the administrator's user, without least privilege", "role", role)
		return cfg.ClickHouse, nil
	}
	users, err := migrations.RoleUsers(cfg.ClickHouse.Database, role, key)
	if err != nil {
		return config.ClickHouse{}, err
	}
	u, ok := migrations.Find(users, cfg.ClickHouse.Database+"_"+role+suffix)
	if !ok {
		return config.ClickHouse{}, fmt.Errorf("role %s has no ClickHouse user %s_%s%s", role, cfg.ClickHouse.Database, role, suffix)
	}
	c := cfg.ClickHouse
	c.Username, c.Password, c.DefaultDatabase, c.AwaitUser = u.Name, u.Password, u.Databases[0], 30*time.Second
	return c, nil
}

// The trails' keys and anchors (promise 17): the audit log and the budget ledger are chained
// with keyed MACs (audit.key_file, ledger.key_file), and their heads are anchored outside
// ClickHouse ('shukei audit anchor', 'shukei ledger anchor', or on a schedule).

// AuditOptions are the audit log's key and sequencer, as every process that appends to it uses
// them: the query service, retention, 'shukei dlq replay'. Without audit.key_file the records
// are chained unkeyed (and refused once the chain holds a keyed one); log says so.
func AuditOptions(cfg config.Config, log *slog.Logger) ([]audit.Option, error) {
	opts := []audit.Option{audit.WithSequencer(cfg.Kafka.Brokers, topic.AuditSpec(cfg))}
	key, err := OptionalKey("audit.key_file", cfg.Audit.KeyFile, cfg.Audit.Key, log)
	if err != nil || key == nil {
		return opts, err
	}
	return append(opts, audit.WithKey(key)), nil
}

// AuditOptionsOrRefuse is AuditOptions for a constructor that cannot fail: when the key
// cannot be loaded, the Log refuses every append with that error.
func AuditOptionsOrRefuse(cfg config.Config, log *slog.Logger) []audit.Option {
	opts, err := AuditOptions(cfg, log)
	if err != nil {
		return []audit.Option{audit.Refusing(err)}
	}
	return opts
}

// LedgerKey is the ledger's chain key (ledger.key_file); nil, with a warning, when not set.
func LedgerKey(cfg config.Config, log *slog.Logger) ([]byte, error) {
	return OptionalKey("ledger.key_file", cfg.Ledger.KeyFile, cfg.Ledger.Key, log)
}

// OptionalKey is a chain key from its file (path) or its value; nil, with a warning on log
// (when not nil), when neither is set. what names the file's setting (audit.key_file).
func OptionalKey(what, path, value string, log *slog.Logger) ([]byte, error) {
	if path == "" && value != "" {
		k, err := chain.ParseKey(value)
		if err != nil {
			return nil, fmt.Errorf("%s (the key itself): %w", strings.TrimSuffix(what, "_file"), err)
		}
		return k, nil
	}
	if path == "" {
		if log != nil {
			log.Warn(what+" is not set: the chain is written unkeyed, which anyone with write access to ClickHouse can rewrite unseen; once it holds a keyed record, appends without the key are refused", "init", "shukei "+what[:len(what)-len(".key_file")]+" init-key")
		}
		return nil, nil
	}
	return chain.LoadKey(what, path)
}
