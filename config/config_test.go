package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
}

// The documented example must stay in step with the code: it decodes strictly and, being a
// list of the defaults, equals Default().
func TestExampleFileMatchesDefaults(t *testing.T) {
	c := Default()
	c.Kafka.Brokers = nil
	c.ClickHouse.Addr = nil
	if err := c.LoadFile(filepath.Join("..", "shukei.example.yaml")); err != nil {
		t.Fatal(err)
	}
	if len(c.Collector.IngestTokens) == 0 {
		c.Collector.IngestTokens = nil // "[]" in the file documents the list; nil is the same
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("shukei.example.yaml differs from Default():\n file: %+v\n code: %+v", c, Default())
	}
	b, err := os.ReadFile(filepath.Join("..", "shukei.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Paths() {
		leaf := p[strings.LastIndex(p, ".")+1:]
		if !strings.Contains(string(b), leaf+":") {
			t.Errorf("shukei.example.yaml does not document %s", p)
		}
	}
}

func TestGoodAndBadFiles(t *testing.T) {
	good, _ := filepath.Glob("testdata/*.good.yml")
	bad, _ := filepath.Glob("testdata/*.bad.yml")
	if len(good) == 0 || len(bad) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range good {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := Default()
			if err := c.LoadFile(f); err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, f := range bad {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yml") + ".err")
			if err != nil {
				t.Fatalf("each bad file needs its expected error in a .err file: %v", err)
			}
			c := Default()
			err = c.LoadFile(f)
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted a bad file")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error does not say %q:\n%v", line, err)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Kafka.Brokers = []string{"nohost"}
	c.Kafka.RawPartitions = 0
	c.ClickHouse.Database = "Bad-Name"
	c.Log.Level = "loud"
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"kafka.brokers[0]", "kafka.raw_partitions", "clickhouse.database", "log.level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %s in %v", want, err)
		}
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shukei.yaml")
	if err := os.WriteFile(file, []byte("kafka:\n  raw_partitions: 12\n  dlq_partitions: 4\nclickhouse:\n  database: fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var c Config
	c.AddFlags(fs)
	if err := fs.Parse([]string{"--kafka.dlq_partitions=9", "--kafka.dial_timeout=3s"}); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"SHUKEI_KAFKA_RAW_PARTITIONS=24",
		"SHUKEI_KAFKA_DLQ_PARTITIONS=5",
		"SHUKEI_KAFKA_BROKERS=a:1, b:2",
		"SHUKEI_SERVICES_DIR=/ignored",
		"PATH=/bin",
	}
	got, err := Load(file, env, fs)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kafka.RawPartitions != 24 { // env over file
		t.Errorf("raw_partitions = %d, want 24", got.Kafka.RawPartitions)
	}
	if got.Kafka.DLQPartitions != 9 { // flag over env over file
		t.Errorf("dlq_partitions = %d, want 9", got.Kafka.DLQPartitions)
	}
	if got.ClickHouse.Database != "fromfile" { // file over default
		t.Errorf("database = %q", got.ClickHouse.Database)
	}
	if !reflect.DeepEqual(got.Kafka.Brokers, []string{"a:1", "b:2"}) {
		t.Errorf("brokers = %q", got.Kafka.Brokers)
	}
	if got.Kafka.DialTimeout != 3*time.Second {
		t.Errorf("dial_timeout = %s", got.Kafka.DialTimeout)
	}
}

func TestEnvErrors(t *testing.T) {
	f := func(env, want string) {
		t.Helper()
		c := Default()
		err := c.ApplyEnv([]string{env})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", env, err, want)
		}
	}
	f("SHUKEI_KAFKA_BROKER=x:1", "unknown setting")
	f("SHUKEI_KAFKA_RAW_PARTITIONS=six", "not an integer")
	f("SHUKEI_KAFKA_DIAL_TIMEOUT=10", "not a duration")
}

func TestEveryFieldHasDoc(t *testing.T) {
	c := Default()
	for _, f := range c.Fields() {
		if f.Doc == "" {
			t.Errorf("%s has no doc tag", f.Path)
		}
	}
}

// Every setting that holds a key or a password is marked secret (never printed by 'shukei
// config'); settings that only name a file, or hold hashes, are not secrets.
func TestSecretsAreMarked(t *testing.T) {
	c := Default()
	notSecret := map[string]bool{"anonymizer.master_key_file": true, "audit.key_file": true, "ledger.key_file": true, "collector.ingest_tokens": true,
		"clickhouse.users_key_file": true, "clickhouse.role_key_file": true}
	for _, f := range c.Fields() {
		name := f.Path[strings.LastIndex(f.Path, ".")+1:]
		looks := strings.Contains(name, "key") || strings.Contains(name, "password") || strings.Contains(name, "secret") || strings.Contains(name, "token")
		if looks && !f.Secret && !notSecret[f.Path] {
			t.Errorf("%s looks like a secret but is not marked secret:\"true\"", f.Path)
		}
	}
	for _, p := range []string{"anonymizer.master_key", "clickhouse.password", "clickhouse.users_key", "clickhouse.role_key", "audit.key", "ledger.key"} {
		found := false
		for _, f := range c.Fields() {
			found = found || f.Path == p && f.Secret
		}
		if !found {
			t.Errorf("%s is not marked secret", p)
		}
	}
}

// The settings that moved to a section of their own (registry.refresh, events.max_event_bytes)
// still read under their old names from the file and the environment, recorded in Renamed;
// both names at once is an error naming both.
func TestRenamedSettings(t *testing.T) {
	dir := t.TempDir()
	file := func(body string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := Load(file("processor:\n  registry_refresh: 7s\ncollector:\n  max_event_bytes: 4096\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Registry.Refresh != 7*time.Second || c.Events.MaxEventBytes != 4096 {
		t.Errorf("old names in the file: registry.refresh %s, events.max_event_bytes %d", c.Registry.Refresh, c.Events.MaxEventBytes)
	}
	if want := []string{"collector.max_event_bytes", "processor.registry_refresh"}; !slices.Equal(c.Renamed, want) {
		t.Errorf("Renamed = %v, want %v", c.Renamed, want)
	}
	// The file's new name and the environment's old name are two sources: the environment wins,
	// as it always does over the file.
	c, err = Load(file("registry:\n  refresh: 3s\nevents:\n  max_event_bytes: 2048\n"), []string{"SHUKEI_PROCESSOR_REGISTRY_REFRESH=9s"}, nil)
	if err != nil || c.Registry.Refresh != 9*time.Second || c.Events.MaxEventBytes != 2048 {
		t.Errorf("new names in the file, old in the environment: %v, refresh %s, max_event_bytes %d", err, c.Registry.Refresh, c.Events.MaxEventBytes)
	}
	if _, err := Load(file("registry:\n  refresh: 3s\nprocessor:\n  registry_refresh: 4s\n"), nil, nil); err == nil || !strings.Contains(err.Error(), "processor.registry_refresh and registry.refresh") {
		t.Errorf("both names in the file: %v", err)
	}
	if _, err := Load("", []string{"SHUKEI_REGISTRY_REFRESH=3s", "SHUKEI_PROCESSOR_REGISTRY_REFRESH=4s"}, nil); err == nil || !strings.Contains(err.Error(), "SHUKEI_PROCESSOR_REGISTRY_REFRESH and SHUKEI_REGISTRY_REFRESH") {
		t.Errorf("both names in the environment: %v", err)
	}
	c, err = Load("", []string{"SHUKEI_COLLECTOR_MAX_EVENT_BYTES=1024"}, nil)
	if err != nil || c.Events.MaxEventBytes != 1024 || !slices.Equal(c.Renamed, []string{"collector.max_event_bytes"}) {
		t.Errorf("old name in the environment: %v, %d, %v", err, c.Events.MaxEventBytes, c.Renamed)
	}
	if _, err := Load(file("collector:\n  max_event_byte: 1\n"), nil, nil); err == nil {
		t.Error("a misspelt key is still refused")
	}
}

// Print shows every setting with its environment variable and where the file came from, and
// never a secret's value.
func TestPrint(t *testing.T) {
	c := Default()
	c.Anonymizer.MasterKey = "00112233"
	var b strings.Builder
	c.Print(&b, "")
	out := b.String()
	if !strings.HasPrefix(out, "# source: (no file: defaults, environment and flags)\n") {
		t.Errorf("source line: %q", strings.SplitN(out, "\n", 2)[0])
	}
	if strings.Contains(out, "00112233") || !strings.Contains(out, "(set)") {
		t.Errorf("a secret must show as (set), never its value:\n%s", out)
	}
	want := 1 + len(c.Fields())
	if n := strings.Count(out, "\n"); n != want {
		t.Errorf("%d lines, want %d (the source and one a setting)", n, want)
	}
	b.Reset()
	c.Print(&b, "x.yaml")
	if !strings.HasPrefix(b.String(), "# source: x.yaml\n") || !strings.Contains(b.String(), "query.max_rows") || !strings.Contains(b.String(), "SHUKEI_QUERY_MAX_ROWS") {
		t.Errorf("with a file:\n%s", b.String())
	}
}

// FilePath takes --config, else $SHUKEI_CONFIG, else ./shukei.yaml if there is one.
func TestFilePath(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("SHUKEI_CONFIG", "")
	if p := FilePath(""); p != "" {
		t.Errorf("nothing given, no ./shukei.yaml: %q, want none", p)
	}
	if err := os.WriteFile("shukei.yaml", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := FilePath(""); p != "shukei.yaml" {
		t.Errorf("./shukei.yaml present: %q", p)
	}
	t.Setenv("SHUKEI_CONFIG", "env.yaml")
	if p := FilePath(""); p != "env.yaml" {
		t.Errorf("SHUKEI_CONFIG set: %q", p)
	}
	if p := FilePath("flag.yaml"); p != "flag.yaml" {
		t.Errorf("--config given: %q", p)
	}
}

// A memory limit must leave the dedupe (32 bytes an id) at most half of it.
func TestProcessorMemoryLimitFitsTheDedupe(t *testing.T) {
	for _, tc := range []struct {
		limit, dedupe int
		ok            bool
	}{
		{256, 2_000_000, true}, // 61 MiB of 256
		{0, 50_000_000, true},  // no limit
		{100, 2_000_000, false},
		{-1, 10, false},
		{130, 2_000_000, true},
	} {
		c := Default()
		c.Processor.MemoryLimitMB, c.Processor.DedupeMax = tc.limit, tc.dedupe
		err := c.Validate()
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "processor.memory_limit_mb")) {
			t.Errorf("memory_limit_mb %d, dedupe_max %d: %v", tc.limit, tc.dedupe, err)
		}
	}
}
