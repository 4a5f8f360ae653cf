// Package config holds Shukei's one configuration: defaults, the YAML file (decoded strictly),
// SHUKEI_* environment variables and command-line flags, in that order of precedence, and the
// validation that reports every problem with its field path before any role starts.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shukei/shukei/event"
)

// Config is the whole configuration. Every leaf field carries a yaml tag (its path in the file,
// its SHUKEI_* variable and its --flag are derived from it) and a doc tag (its help text).
type Config struct {
	Kafka      Kafka      `yaml:"kafka"`
	ClickHouse ClickHouse `yaml:"clickhouse"`
	Events     Events     `yaml:"events"`
	Registry   Registry   `yaml:"registry"`
	Collector  Collector  `yaml:"collector"`
	Processor  Processor  `yaml:"processor"`
	Aggregator Aggregator `yaml:"aggregator"`
	Query      Query      `yaml:"query"`
	Anonymizer Anonymizer `yaml:"anonymizer"`
	Audit      Audit      `yaml:"audit"`
	Ledger     Ledger     `yaml:"ledger"`
	Log        Log        `yaml:"log"`

	// Renamed lists the settings the file or the environment gave by an old name (see
	// Renamed, the variable); not a setting.
	Renamed []string `yaml:"-"`
}

// Audit is the query service's audit log: the key its chain is keyed with, the Kafka topic
// that orders its appends, and where its head is anchored outside ClickHouse (promise 17).
type Audit struct {
	KeyFile     string        `yaml:"key_file" doc:"file holding the audit log's chain key (64 hex digits, mode 0600; 'shukei audit init-key' writes one): held by the query service, retention and the admin commands; without it records are chained unkeyed, and refused once the chain holds a keyed record"`
	Key         string        `yaml:"key" secret:"true" doc:"the audit log's chain key itself, in hex (prefer key_file; SHUKEI_AUDIT_KEY, as docker-compose.yml passes it)"`
	Topic       string        `yaml:"topic" doc:"the audit log's sequencer (one partition): every writer produces its records here and their order is the chain's, so concurrent writers never fork it"`
	AnchorFile  string        `yaml:"anchor_file" doc:"file the query service appends the audit chain's head to every anchor_every (one JSON line); empty: off"`
	AnchorEvery time.Duration `yaml:"anchor_every" doc:"how often the query service anchors the audit chain's head to anchor_file; 0: off"`
}

// Ledger is the privacy-budget ledger's chain key and anchors (promise 17).
type Ledger struct {
	KeyFile     string        `yaml:"key_file" doc:"file holding the budget ledger's chain key (64 hex digits, mode 0600; 'shukei ledger init-key' writes one): held by the aggregator and the admin commands; without it entries are chained unkeyed, and refused once a chain holds a keyed entry"`
	Key         string        `yaml:"key" secret:"true" doc:"the ledger's chain key itself, in hex (prefer key_file; SHUKEI_LEDGER_KEY, as docker-compose.yml passes it)"`
	AnchorFile  string        `yaml:"anchor_file" doc:"file the aggregator appends the ledger's heads (every purpose's chain) to every anchor_every (one JSON line); empty: off"`
	AnchorEvery time.Duration `yaml:"anchor_every" doc:"how often the aggregator anchors the ledger's heads to anchor_file; 0: off"`
}

// Processor is the Kafka → ClickHouse role.
type Processor struct {
	GroupID       string        `yaml:"group_id" doc:"Kafka consumer group of the processors (every instance shares it)"`
	BatchSize     int           `yaml:"batch_size" doc:"events a ClickHouse insert carries at most"`
	BatchTimeout  time.Duration `yaml:"batch_timeout" doc:"longest wait to fill a batch once its first event arrived"`
	DedupeHorizon time.Duration `yaml:"dedupe_horizon" doc:"how long a stored event_id is remembered to drop collector retries"`
	DedupeMax     int           `yaml:"dedupe_max" doc:"event_ids remembered at most per instance (memory bound)"`
	MaxBackoff    time.Duration `yaml:"max_backoff" doc:"longest wait between retries while ClickHouse or Kafka is down"`
	Listen        string        `yaml:"listen" doc:"address of /metrics, /healthz and /readyz"`
	MemoryLimitMB int           `yaml:"memory_limit_mb" doc:"soft limit of the processor process's Go memory in MiB (runtime/debug.SetMemoryLimit): the garbage collector works harder near it instead of letting the heap double; 0: no limit"`
	Profile       string        `yaml:"profile" doc:"path prefix of the Go profiles the processor writes when it stops: <profile>.cpu.pprof (its whole run) and <profile>.allocs.pprof (every allocation since it started); for make bench, empty: off"`
}

// Aggregator is the role that releases differentially private cross-tenant aggregates for the
// external_aggregate purpose (docs/DESIGN.md §4).
type Aggregator struct {
	GroupID           string        `yaml:"group_id" doc:"Kafka consumer group of the aggregators (every instance shares it; the member holding partition 0 releases)"`
	Window            time.Duration `yaml:"window" doc:"event-time window of a release: 24h (daily) or a divisor of it such as 1h"`
	AllowedLateness   time.Duration `yaml:"allowed_lateness" doc:"how long after a window's end events are still added; later ones are counted as late, never added"`
	Epsilon           float64       `yaml:"epsilon" doc:"ε of one metric's release for one window (partition selection included); 0: windows are accumulated but not released on their own"`
	WeekEpsilon       float64       `yaml:"week_epsilon" doc:"ε of one metric's release for one ISO week (Monday to Monday, UTC), each tenant bounded over the whole week; 0: no weekly releases"`
	MonthEpsilon      float64       `yaml:"month_epsilon" doc:"ε of one metric's release for one calendar month (UTC), each tenant bounded over the whole month; 0: no monthly releases"`
	SelectionShare    float64       `yaml:"selection_share" doc:"share of a metric's ε spent on private partition selection when its cells come from data"`
	SelectionDelta    float64       `yaml:"selection_delta" doc:"δ of one metric's partition selection (must stay far below 1/number of tenants)"`
	Mechanism         string        `yaml:"mechanism" doc:"noise: laplace (pure ε-DP) or gaussian"`
	GaussianDelta     float64       `yaml:"gaussian_delta" doc:"δ of a Gaussian metric release (unused for laplace)"`
	BudgetEpsilon     float64       `yaml:"budget_epsilon" doc:"ε budget of external_aggregate per calendar month; 0 takes the policy's"`
	BudgetDelta       float64       `yaml:"budget_delta" doc:"δ budget per calendar month; 0 takes the policy's"`
	BudgetEpsilonYear float64       `yaml:"budget_epsilon_year" doc:"ε budget of external_aggregate over any 365 days of windows (a rolling year, checked with the monthly one); 0 is twelve monthly budgets"`
	BudgetDeltaYear   float64       `yaml:"budget_delta_year" doc:"δ budget over any 365 days of windows; 0 is twelve monthly budgets"`
	Features          []string      `yaml:"features" doc:"the public feature catalogue: these feature ids are released without partition selection; others only if selected privately"`
	Settings          []string      `yaml:"settings" doc:"the public settings catalogue, as features"`
	ClosedCatalogues  bool          `yaml:"closed_catalogues" doc:"with a feature or settings catalogue, release ids outside it as 'other' instead of selecting them privately: no cell comes from the data, so the metric's whole ε goes to the noise (half the noise at the default selection_share)"`
	Editions          []string      `yaml:"editions" doc:"editions released as themselves; any other edition is released as 'other'"`
	MaxTenantCells    int           `yaml:"max_tenant_cells" doc:"distinct cells one tenant may open in one metric of one base window; its events for further cells are counted (shukei_aggregator_tenant_cells_refused_total) and not added, so one tenant cannot grow the open windows without bound (bounding keeps at most L0 cells of a tenant anyway)"`
	ReleaseInterval   time.Duration `yaml:"release_interval" doc:"how often the release step looks for windows every partition has closed"`
	SealAfter         time.Duration `yaml:"seal_after" doc:"how long after an ISO week ends the release step seals its gated atoms (the only data the aggregate reports and the dashboards read); events stored later are in the per-tenant marts but never in that week's atoms; between 0 and events.max_age"`
	MaxBackoff        time.Duration `yaml:"max_backoff" doc:"longest wait between retries while ClickHouse or Kafka is down"`
	Listen            string        `yaml:"listen" doc:"address of /metrics, /healthz and /readyz"`
	// StateRetention is how long the un-noised partial aggregates of a window are kept after
	// the window's release; 'shukei retention run' deletes them then. Partials of a window
	// not yet released are never deleted, nor the progress a restart resumes from.
	StateRetention time.Duration `yaml:"state_retention" doc:"how long after a window's release 'shukei retention run' keeps its un-noised partial aggregates (aggregate_state); unreleased windows and the progress a restart resumes from are always kept; between 1h and 2160h"`
}

// Query is the purpose-scoped query service (shukei query).
type Query struct {
	Listen          string        `yaml:"listen" doc:"address of the HTTP API, the web page and /openapi.json (no metrics: they are on ops_listen)"`
	OpsListen       string        `yaml:"ops_listen" doc:"address of /metrics, /healthz and /readyz, like the other roles' listen: keep it off the public network"`
	K               int           `yaml:"k" doc:"fewest distinct tenants behind a cell of an aggregate report; 0 takes the policy's k, a smaller value than the policy's is refused"`
	SupportLookback time.Duration `yaml:"support_lookback" doc:"how far before a ticket was opened support may read the tenant's trace"`
	MaxRows         int           `yaml:"max_rows" doc:"most rows one report returns"`
	Timeout         time.Duration `yaml:"timeout" doc:"longest a report may run"`
	ReaderWait      time.Duration `yaml:"reader_wait" doc:"how long to wait at start for ClickHouse to load the purpose readers migrate wrote"`
	// MaxInFlight bounds the requests of principals answered at once; requests without a
	// valid token are refused before they take one (promise 18).
	MaxInFlight int `yaml:"max_in_flight" doc:"most requests of principals answered at once; beyond it 503 with Retry-After (requests without a valid token are refused before taking one); between 1 and 10000"`
	// UnauthenticatedSummaryEvery is how often requests without a valid token (none,
	// malformed, unknown) are summarised in the audit log: one record opens an interval and
	// answers every such refusal in it, one more carries their count when it ends.
	UnauthenticatedSummaryEvery time.Duration `yaml:"unauthenticated_summary_every" doc:"how often requests without a valid token are summarised in the audit log (one record opening the interval, whose seq each of them is answered with, and one with their count); between 1s and 24h"`
	// UnauthenticatedRate paces those refusals, so a flood of them takes a bounded share of
	// the machine from the reports of principals.
	UnauthenticatedRate float64 `yaml:"unauthenticated_rate" doc:"most requests without a valid token answered (401) a second; the others wait their turn (at most 5s), holding no slot; between 1 and 1000000"`
}

// Anonymizer holds the master key that protects the per-tenant pseudonymisation keys.
type Anonymizer struct {
	MasterKeyFile string `yaml:"master_key_file" doc:"file holding the 32-byte master key (64 hex digits); 'shukei keys init' writes one"`
	MasterKey     string `yaml:"master_key" secret:"true" doc:"the master key itself, for SHUKEI_ANONYMIZER_MASTER_KEY; prefer the file; never commit it"`
}

// EventLimits are the limits every role decodes events under (the collector, the processor and
// the aggregator): the events section's max_age, max_skew and max_event_bytes, and event's
// defaults for what is unset. The one place event.Limits are built from the configuration.
func EventLimits(ev Events) event.Limits {
	return event.Limits{MaxAge: ev.MaxAge, MaxSkew: ev.MaxSkew, MaxBytes: ev.MaxEventBytes}.WithDefaults()
}

// EventLimits are the configuration's event limits (see the function EventLimits).
func (c Config) EventLimits() event.Limits { return EventLimits(c.Events) }

// Events bounds what any stage accepts as an event: the collector, the processor and the
// aggregator decode under the same limits.
type Events struct {
	MaxAge        time.Duration `yaml:"max_age" doc:"oldest occurred_at accepted, relative to now (older events are rejected as too_old)"`
	MaxSkew       time.Duration `yaml:"max_skew" doc:"how far in the future occurred_at may be, for client clock skew"`
	MaxEventBytes int           `yaml:"max_event_bytes" doc:"largest single event, at every stage (was collector.max_event_bytes)"`
}

// Registry is how the roles that follow the tenant registry (collector, processor,
// aggregator) keep their copy of it.
type Registry struct {
	Refresh time.Duration `yaml:"refresh" doc:"how often the collector, the processor and the aggregator reload the tenant registry (tokens, statuses, consents, policy activations; was processor.registry_refresh)"`
}

// Collector is the HTTP ingest role.
type Collector struct {
	Listen       string `yaml:"listen" doc:"address the collector's HTTP API listens on (no metrics: they are on ops_listen)"`
	OpsListen    string `yaml:"ops_listen" doc:"address of /metrics, /healthz and /readyz: keep it off the public network"`
	MaxBodyBytes int    `yaml:"max_body_bytes" doc:"largest request body, after gzip decompression"`
	MaxEvents    int    `yaml:"max_events" doc:"most events in one request"`
	MaxInFlight  int    `yaml:"max_in_flight" doc:"requests handled at once; past it the collector answers 503 with Retry-After"`
	// Per tenant: ingest tokens of browser pages are public by nature, so one tenant's token
	// must not be able to take the collector from the others.
	TenantInFlight int           `yaml:"tenant_in_flight" doc:"requests of one tenant handled at once (at most max_in_flight); past it that tenant gets 429 with Retry-After"`
	TenantRate     float64       `yaml:"tenant_rate" doc:"events a second one tenant may send, on average (a token bucket); over it the whole request gets 429 with Retry-After, nothing of it accepted; 0: no limit"`
	TenantBurst    int           `yaml:"tenant_burst" doc:"events one tenant may send at once above tenant_rate (the bucket's size); at least max_events"`
	RetryAfter     time.Duration `yaml:"retry_after" doc:"what 503 replies tell senders to wait"`
	WriteTimeout   time.Duration `yaml:"write_timeout" doc:"longest wait for Kafka to acknowledge a request's events"`
	IngestTokens   []string      `yaml:"ingest_tokens" doc:"tenant:sha256-hex-of-token pairs accepted until the tenant registry issues tokens ('shukei collector token' makes one)"`
	AllowOrigins   []string      `yaml:"allow_origins" doc:"browser origins (https://app.example.com) allowed to send events cross-origin; * for any (safe: auth is a bearer token, never a cookie); empty for none"`
}

// Kafka says where the broker is and how the topics are laid out.
type Kafka struct {
	Brokers  []string `yaml:"brokers" doc:"bootstrap brokers, host:port, comma-separated in env and flags"`
	RawTopic string   `yaml:"raw_topic" doc:"topic collectors write usage events to, keyed by tenant id"`
	DLQTopic string   `yaml:"dlq_topic" doc:"topic rejected events go to, with their reason"`
	// ReleaseTopic is the release log: one partition whose order decides, for each window,
	// which drawn release is the one published (the first), so no window is ever published
	// with a second, independent draw of noise.
	ReleaseTopic      string        `yaml:"release_topic" doc:"the aggregator's release log (one partition): the first release drawn for a window is the only one ever published"`
	RawPartitions     int           `yaml:"raw_partitions" doc:"partitions of the raw topic: the most processor or aggregator instances that can share the work"`
	DLQPartitions     int           `yaml:"dlq_partitions" doc:"partitions of the DLQ topic"`
	ReplicationFactor int           `yaml:"replication_factor" doc:"replicas of each topic partition (1 for a single broker, 3 in production)"`
	DialTimeout       time.Duration `yaml:"dial_timeout" doc:"how long to wait for a broker connection"`
	// RawRetention is the raw topic's retention.ms: the longest time a raw user id can exist
	// anywhere in Shukei (everything after the raw topic holds pseudonyms). Kafka deletes a
	// record with its whole log segment, so 'shukei topics' also sets segment.ms (at most 1h);
	// a record is gone at most that and the broker's retention check interval (5m) later.
	RawRetention time.Duration `yaml:"raw_retention" doc:"retention.ms of the raw topic, set and enforced by 'shukei topics': the longest time a raw user id can exist anywhere in Shukei (plus at most the topic's segment.ms, 1h, and the broker's retention check interval); at least aggregator.window + aggregator.allowed_lateness, at most 720h"`
	// DLQRetention is the DLQ topic's retention.ms. Its records carry reasons and keyed hashes,
	// no content; still, unbounded retention is never a default.
	DLQRetention time.Duration `yaml:"dlq_retention" doc:"retention.ms of the DLQ topic, set and enforced by 'shukei topics' (records hold reasons and keyed hashes, no content); between 1h and 2160h"`
}

// ClickHouse says where the server is and which databases Shukei owns.
type ClickHouse struct {
	Addr           []string      `yaml:"addr" doc:"native-protocol addresses, host:port (the HTTP transport is not supported on ClickHouse 18.16)"`
	Database       string        `yaml:"database" doc:"name of the internal database; purpose databases are named <database>_<purpose>"`
	Username       string        `yaml:"username" doc:"user for migrations and writes"`
	Password       string        `yaml:"password" secret:"true" doc:"password of that user (prefer SHUKEI_CLICKHOUSE_PASSWORD to the file)"`
	DialTimeout    time.Duration `yaml:"dial_timeout" doc:"how long to wait for a server connection"`
	Cluster        string        `yaml:"cluster" doc:"the ClickHouse cluster (remote_servers name) Shukei's tables live on, sharded by tenant and replicated (migrate runs each statement on the nodes it belongs on); empty: one server"`
	ClusterUser    string        `yaml:"cluster_user" doc:"on ClickHouse 18.16, the user remote_servers names for queries one node sends another (a Distributed table's): 'shukei migrate' grants it, read-only, the databases of sharded tables and no other (scripts/cluster.sh declares it); empty where the cluster passes the initial user on (remote_servers <secret>, ClickHouse 20.10 and later)"`
	UsersDir       string        `yaml:"users_dir" doc:"the server's users.d directory: 'shukei migrate' writes every role's users there (promise 16); on a cluster, every node's, separated by ':' (the users must exist on every node); empty: migrate prints the file instead"`
	ReaderNetworks []string      `yaml:"reader_networks" doc:"networks (IP or CIDR) the roles' users may connect from"`
	UsersKeyFile   string        `yaml:"users_key_file" doc:"the administrator's secret every role's key derives from ('shukei users key <role>'); empty: derived from the master key. Mode 0600"`
	RoleKeyFile    string        `yaml:"role_key_file" doc:"this role's own key (the output of 'shukei users key <role>'): the role connects as its own users and needs neither the users key nor the master key for it. Mode 0600"`
	UsersKey       string        `yaml:"users_key" secret:"true" doc:"the users key itself, in hex (prefer users_key_file; SHUKEI_CLICKHOUSE_USERS_KEY)"`
	RoleKey        string        `yaml:"role_key" secret:"true" doc:"this role's key itself, in hex (prefer role_key_file; SHUKEI_CLICKHOUSE_ROLE_KEY, as docker-compose.yml passes it)"`
	// DefaultDatabase is the database a connection starts in ("default" when empty): a role's
	// user is allowed only its own databases.
	DefaultDatabase string `yaml:"-"`
	// AwaitUser is how long a user the server does not know yet is waited for: a role's user
	// that 'shukei migrate' has just declared (the server loads users.d within seconds).
	AwaitUser time.Duration `yaml:"-"`
	// Dial, when set, opens the connections instead of clickhouse-go's own dialer: the
	// processor's, so that it can end an open insert without the server keeping any of it
	// (processor.discarder).
	Dial func(ctx context.Context, addr string) (net.Conn, error) `yaml:"-"`
}

// Log sets the structured logger.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error"`
	Format string `yaml:"format" doc:"text or json"`
}

// Default returns the configuration that matches the services scripts/services.sh starts.
func Default() Config {
	return Config{
		Kafka: Kafka{
			Brokers:           []string{"127.0.0.1:19092"},
			RawTopic:          "usage.raw",
			DLQTopic:          "usage.dlq",
			ReleaseTopic:      "usage.releases",
			RawPartitions:     6,
			DLQPartitions:     3,
			ReplicationFactor: 1,
			DialTimeout:       10 * time.Second,
			RawRetention:      7 * 24 * time.Hour,
			DLQRetention:      30 * 24 * time.Hour,
		},
		ClickHouse: ClickHouse{
			Addr:           []string{"127.0.0.1:19000"},
			Database:       "shukei",
			Username:       "default",
			DialTimeout:    10 * time.Second,
			ReaderNetworks: []string{"127.0.0.1", "::1"},
		},
		Events:   Events{MaxAge: 7 * 24 * time.Hour, MaxSkew: 5 * time.Minute, MaxEventBytes: 8 << 10},
		Registry: Registry{Refresh: 5 * time.Second},
		Collector: Collector{
			Listen:         "127.0.0.1:8080",
			OpsListen:      "127.0.0.1:9100",
			MaxBodyBytes:   1 << 20,
			MaxEvents:      1000,
			MaxInFlight:    64,
			TenantInFlight: 16,
			TenantRate:     5000,
			TenantBurst:    50000,
			RetryAfter:     2 * time.Second,
			WriteTimeout:   10 * time.Second,
			AllowOrigins:   []string{"*"},
		},
		Processor: Processor{
			GroupID:       "shukei-processor",
			BatchSize:     200000,
			BatchTimeout:  time.Second,
			DedupeHorizon: time.Hour,
			DedupeMax:     2000000,
			MaxBackoff:    30 * time.Second,
			MemoryLimitMB: 256,
			Listen:        "127.0.0.1:9101",
		},
		Aggregator: Aggregator{
			GroupID:         "shukei-aggregator",
			Window:          24 * time.Hour,
			AllowedLateness: 2 * time.Hour,
			// Chosen with the utility report (README, "Choosing ε"): a month at ε=1 and an ISO
			// week at ε=0.5 per metric, no daily releases.
			Epsilon:      0,
			WeekEpsilon:  0.5,
			MonthEpsilon: 1,
			// The rolling year: twelve months and 53 weeks of the five metrics, 60 + 132.5.
			BudgetEpsilonYear: 192.5,
			SelectionShare:    0.5,
			SelectionDelta:    1e-8,
			Mechanism:         "laplace",
			GaussianDelta:     1e-8,
			Features:          []string{},
			Settings:          []string{},
			Editions:          []string{"standard", "professional", "enterprise"},
			ReleaseInterval:   5 * time.Second,
			SealAfter:         6 * time.Hour,
			MaxTenantCells:    1024,
			MaxBackoff:        30 * time.Second,
			Listen:            "127.0.0.1:9102",
			StateRetention:    3 * 24 * time.Hour,
		},
		Query: Query{
			Listen:          "127.0.0.1:8081",
			OpsListen:       "127.0.0.1:9103",
			SupportLookback: 7 * 24 * time.Hour,
			MaxRows:         10000,
			Timeout:         10 * time.Second,
			ReaderWait:      30 * time.Second,

			MaxInFlight:                 64,
			UnauthenticatedSummaryEvery: time.Minute,
			UnauthenticatedRate:         2000,
		},
		Audit: Audit{Topic: "shukei.audit"},
		Log:   Log{Level: "info", Format: "text"},
	}
}

// The longest retention Validate accepts for the raw and the DLQ topic.
const (
	MaxRawRetention = 30 * 24 * time.Hour
	MaxDLQRetention = 90 * 24 * time.Hour
)

// ErrInvalid marks every validation failure; the joined errors name each field.
var ErrInvalid = errors.New("invalid configuration")

// Renamed are settings that moved to a section of their own, old path → new path. The old
// path still works in the file and the environment, recorded in Config.Renamed (the command
// logs a warning); given both ways it is an error. Flags have only the new name.
var Renamed = map[string]string{
	"processor.registry_refresh": "registry.refresh",
	"collector.max_event_bytes":  "events.max_event_bytes",
}

// Decode reads YAML onto c. Unknown keys are errors, so a typo cannot silently fall back to a
// default.
func (c *Config) Decode(r io.Reader) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(r)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file keeps the defaults
		}
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// A second document in the file is almost certainly a mistake.
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: only one YAML document is allowed", ErrInvalid)
	}
	if err := c.moveRenamed(&doc); err != nil {
		return err
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// moveRenamed moves each renamed setting of the document to its new path.
func (c *Config) moveRenamed(doc *yaml.Node) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil // not a mapping: the strict decode says what is wrong
	}
	root := doc.Content[0]
	section := func(m *yaml.Node, name string, create bool) *yaml.Node {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == name {
				return m.Content[i+1]
			}
		}
		if !create {
			return nil
		}
		v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, v)
		return v
	}
	for _, old := range slices.Sorted(maps.Keys(Renamed)) {
		oldSec, oldKey, _ := strings.Cut(old, ".")
		newSec, newKey, _ := strings.Cut(Renamed[old], ".")
		from := section(root, oldSec, false)
		if from == nil || from.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(from.Content); i += 2 {
			if from.Content[i].Value != oldKey {
				continue
			}
			to := section(root, newSec, true)
			if to.Kind != yaml.MappingNode {
				return nil // the strict decode says what is wrong
			}
			if section(to, newKey, false) != nil {
				return fmt.Errorf("%w: %s and %s are the same setting (%s is its old name): keep %s", ErrInvalid, old, Renamed[old], old, Renamed[old])
			}
			k, v := from.Content[i], from.Content[i+1]
			k.Value = newKey
			to.Content = append(to.Content, k, v)
			from.Content = append(from.Content[:i], from.Content[i+2:]...)
			c.Renamed = append(c.Renamed, old)
			break
		}
	}
	return nil
}

// LoadFile decodes the file at path onto c.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := c.Decode(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Validate reports every problem at once, each prefixed with its field path.
func (c Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	hostPorts := func(path string, addrs []string) {
		if len(addrs) == 0 {
			bad(path, "must name at least one host:port")
		}
		for i, a := range addrs {
			host, port, ok := strings.Cut(a, ":")
			if !ok || host == "" || port == "" || strings.ContainsAny(a, " /") {
				bad(fmt.Sprintf("%s[%d]", path, i), "%q is not host:port", a)
			}
		}
	}
	topic := func(path, name string) {
		if name == "" || len(name) > 249 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			bad(path, "%q is not a valid Kafka topic name (letters, digits, '.', '_', '-', at most 249)", name)
		}
	}

	hostPorts("kafka.brokers", c.Kafka.Brokers)
	topic("kafka.raw_topic", c.Kafka.RawTopic)
	topic("kafka.dlq_topic", c.Kafka.DLQTopic)
	if c.Kafka.RawTopic != "" && c.Kafka.RawTopic == c.Kafka.DLQTopic {
		bad("kafka.dlq_topic", "must differ from kafka.raw_topic")
	}
	topic("kafka.release_topic", c.Kafka.ReleaseTopic)
	if c.Kafka.ReleaseTopic != "" && (c.Kafka.ReleaseTopic == c.Kafka.RawTopic || c.Kafka.ReleaseTopic == c.Kafka.DLQTopic) {
		bad("kafka.release_topic", "must differ from kafka.raw_topic and kafka.dlq_topic")
	}
	topic("audit.topic", c.Audit.Topic)
	if c.Audit.Topic != "" && (c.Audit.Topic == c.Kafka.RawTopic || c.Audit.Topic == c.Kafka.DLQTopic || c.Audit.Topic == c.Kafka.ReleaseTopic) {
		bad("audit.topic", "must differ from kafka.raw_topic, kafka.dlq_topic and kafka.release_topic")
	}
	for path, d := range map[string]time.Duration{"audit.anchor_every": c.Audit.AnchorEvery, "ledger.anchor_every": c.Ledger.AnchorEvery} {
		if d < 0 || (d > 0 && d < time.Second) {
			bad(path, "must be 0 (off) or at least 1s, got %s", d)
		}
	}
	if c.Audit.AnchorEvery > 0 && c.Audit.AnchorFile == "" {
		bad("audit.anchor_file", "must be set when audit.anchor_every is")
	}
	if c.Ledger.AnchorEvery > 0 && c.Ledger.AnchorFile == "" {
		bad("ledger.anchor_file", "must be set when ledger.anchor_every is")
	}
	if c.Audit.KeyFile != "" && c.Audit.KeyFile == c.Ledger.KeyFile {
		bad("ledger.key_file", "must differ from audit.key_file: each chain has a key of its own")
	}
	for path, f := range map[string]string{"audit.key_file": c.Audit.KeyFile, "ledger.key_file": c.Ledger.KeyFile} {
		if f != "" && f == c.Anonymizer.MasterKeyFile {
			bad(path, "must differ from anonymizer.master_key_file: a chain key is never the master key")
		}
	}
	if c.Kafka.RawPartitions < 1 || c.Kafka.RawPartitions > 1024 {
		bad("kafka.raw_partitions", "must be between 1 and 1024, got %d", c.Kafka.RawPartitions)
	}
	if c.Kafka.DLQPartitions < 1 || c.Kafka.DLQPartitions > 1024 {
		bad("kafka.dlq_partitions", "must be between 1 and 1024, got %d", c.Kafka.DLQPartitions)
	}
	if c.Kafka.ReplicationFactor < 1 || c.Kafka.ReplicationFactor > 16 {
		bad("kafka.replication_factor", "must be between 1 and 16, got %d", c.Kafka.ReplicationFactor)
	}
	if c.Kafka.DialTimeout <= 0 {
		bad("kafka.dial_timeout", "must be positive, got %s", c.Kafka.DialTimeout)
	}
	// The raw topic holds raw user ids: its retention is bounded above. Below, a restarted
	// aggregator replays its open windows from the topic: their first records must still be
	// there.
	if replay := c.Aggregator.Window + c.Aggregator.AllowedLateness; c.Kafka.RawRetention < max(time.Hour, replay) || c.Kafka.RawRetention > MaxRawRetention {
		bad("kafka.raw_retention", "must be between %s (1h, and aggregator.window + aggregator.allowed_lateness, which a restarted aggregator replays) and %s, got %s",
			max(time.Hour, replay), MaxRawRetention, c.Kafka.RawRetention)
	}
	if c.Kafka.RawRetention%time.Millisecond != 0 {
		bad("kafka.raw_retention", "must be whole milliseconds (Kafka's retention.ms), got %s", c.Kafka.RawRetention)
	}
	if c.Kafka.DLQRetention < time.Hour || c.Kafka.DLQRetention > MaxDLQRetention || c.Kafka.DLQRetention%time.Millisecond != 0 {
		bad("kafka.dlq_retention", "must be whole milliseconds between 1h and %s, got %s", MaxDLQRetention, c.Kafka.DLQRetention)
	}

	hostPorts("clickhouse.addr", c.ClickHouse.Addr)
	if cl := c.ClickHouse.Cluster; cl != "" && !validDatabase(cl) {
		bad("clickhouse.cluster", "%q must match ^[a-z][a-z0-9_]{0,39}$", cl)
	}
	if !validDatabase(c.ClickHouse.Database) {
		bad("clickhouse.database", "%q must match ^[a-z][a-z0-9_]{0,39}$ (purpose databases append _<purpose>)", c.ClickHouse.Database)
	}
	if c.ClickHouse.Username == "" {
		bad("clickhouse.username", "must not be empty")
	}
	if c.ClickHouse.DialTimeout <= 0 {
		bad("clickhouse.dial_timeout", "must be positive, got %s", c.ClickHouse.DialTimeout)
	}

	if c.Events.MaxAge <= 0 {
		bad("events.max_age", "must be positive, got %s", c.Events.MaxAge)
	}
	if c.Events.MaxSkew < 0 {
		bad("events.max_skew", "must not be negative, got %s", c.Events.MaxSkew)
	}

	if _, _, err := net.SplitHostPort(c.Collector.Listen); err != nil {
		bad("collector.listen", "%q is not host:port", c.Collector.Listen)
	}
	if c.Events.MaxEventBytes < 256 || c.Events.MaxEventBytes > 1<<20 {
		bad("events.max_event_bytes", "must be between 256 and 1048576, got %d", c.Events.MaxEventBytes)
	}
	if c.Collector.MaxBodyBytes < c.Events.MaxEventBytes || c.Collector.MaxBodyBytes > 64<<20 {
		bad("collector.max_body_bytes", "must be between events.max_event_bytes and 64 MiB, got %d", c.Collector.MaxBodyBytes)
	}
	if c.Collector.MaxEvents < 1 || c.Collector.MaxEvents > 100000 {
		bad("collector.max_events", "must be between 1 and 100000, got %d", c.Collector.MaxEvents)
	}
	if c.Collector.MaxInFlight < 1 {
		bad("collector.max_in_flight", "must be at least 1, got %d", c.Collector.MaxInFlight)
	}
	if c.Collector.TenantInFlight < 1 || c.Collector.TenantInFlight > c.Collector.MaxInFlight {
		bad("collector.tenant_in_flight", "must be between 1 and collector.max_in_flight (%d), got %d", c.Collector.MaxInFlight, c.Collector.TenantInFlight)
	}
	if c.Collector.TenantRate < 0 {
		bad("collector.tenant_rate", "must not be negative, got %g", c.Collector.TenantRate)
	}
	if c.Collector.TenantRate > 0 && c.Collector.TenantBurst < c.Collector.MaxEvents {
		bad("collector.tenant_burst", "must be at least collector.max_events (%d): a full request could never pass, got %d", c.Collector.MaxEvents, c.Collector.TenantBurst)
	}
	if c.Collector.RetryAfter < time.Second {
		bad("collector.retry_after", "must be at least 1s (Retry-After counts whole seconds), got %s", c.Collector.RetryAfter)
	}
	if c.Collector.WriteTimeout <= 0 {
		bad("collector.write_timeout", "must be positive, got %s", c.Collector.WriteTimeout)
	}
	for i, t := range c.Collector.IngestTokens {
		tenant, sum, ok := strings.Cut(t, ":")
		if !ok || !event.IsID(tenant) || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
			bad(fmt.Sprintf("collector.ingest_tokens[%d]", i), "must be tenant:<64 lowercase hex of sha256(token)>")
		}
	}

	for i, o := range c.Collector.AllowOrigins {
		if o != "*" && !(strings.HasPrefix(o, "https://") || strings.HasPrefix(o, "http://")) || strings.HasSuffix(o, "/") {
			bad(fmt.Sprintf("collector.allow_origins[%d]", i), "%q must be * or scheme://host[:port] without a path", o)
		}
	}

	if c.Processor.GroupID == "" {
		bad("processor.group_id", "must not be empty")
	}
	if c.Processor.BatchSize < 1 || c.Processor.BatchSize > 1000000 {
		bad("processor.batch_size", "must be between 1 and 1000000 (ClickHouse splits bigger inserts, which breaks their atomicity), got %d", c.Processor.BatchSize)
	}
	if c.Processor.BatchTimeout <= 0 || c.Processor.BatchTimeout > 5*time.Second {
		bad("processor.batch_timeout", "must be positive and at most 5s (an open insert must not idle for 10s), got %s", c.Processor.BatchTimeout)
	}
	if c.Processor.DedupeHorizon < 0 || c.Processor.DedupeMax < 0 {
		bad("processor.dedupe_horizon", "dedupe_horizon and dedupe_max must not be negative")
	}
	// The dedupe's memory is fixed (32 bytes an id, pipeline/processor/dedupe.go); a limit that
	// leaves it less than half would keep the garbage collector running flat out.
	if mb := c.Processor.MemoryLimitMB; mb < 0 || (mb > 0 && int64(c.Processor.DedupeMax)*32 > int64(mb)<<19) {
		bad("processor.memory_limit_mb", "must be 0 (no limit) or at least twice the dedupe's %d MiB (dedupe_max × 32 bytes), got %d", int64(c.Processor.DedupeMax)*32>>20, mb)
	}
	if c.Registry.Refresh < 100*time.Millisecond {
		bad("registry.refresh", "must be at least 100ms, got %s", c.Registry.Refresh)
	}
	if c.Processor.MaxBackoff < 100*time.Millisecond {
		bad("processor.max_backoff", "must be at least 100ms, got %s", c.Processor.MaxBackoff)
	}
	c.validateAggregator(bad)
	if _, _, err := net.SplitHostPort(c.Processor.Listen); err != nil {
		bad("processor.listen", "%q is not host:port", c.Processor.Listen)
	}

	if len(c.ClickHouse.ReaderNetworks) == 0 {
		bad("clickhouse.reader_networks", "must name at least one network (127.0.0.1, ::1, 10.0.0.0/8, ::/0)")
	}
	for i, n := range c.ClickHouse.ReaderNetworks {
		if _, _, err := net.ParseCIDR(n); err != nil && net.ParseIP(n) == nil {
			bad(fmt.Sprintf("clickhouse.reader_networks[%d]", i), "%q is not an IP address or CIDR", n)
		}
	}
	if _, _, err := net.SplitHostPort(c.Query.Listen); err != nil {
		bad("query.listen", "%q is not host:port", c.Query.Listen)
	}
	if c.Query.K < 0 || c.Query.K > 1000 {
		bad("query.k", "must be between 0 (the policy's) and 1000, got %d", c.Query.K)
	}
	if c.Query.SupportLookback < 0 || c.Query.SupportLookback > 90*24*time.Hour {
		bad("query.support_lookback", "must be between 0 and 2160h, got %s", c.Query.SupportLookback)
	}
	if c.Query.MaxRows < 1 || c.Query.MaxRows > 1000000 {
		bad("query.max_rows", "must be between 1 and 1000000, got %d", c.Query.MaxRows)
	}
	if c.Query.Timeout <= 0 || c.Query.ReaderWait < 0 {
		bad("query.timeout", "timeout must be positive and reader_wait not negative")
	}
	if c.Query.MaxInFlight < 1 || c.Query.MaxInFlight > 10000 {
		bad("query.max_in_flight", "must be between 1 and 10000, got %d", c.Query.MaxInFlight)
	}
	if c.Query.UnauthenticatedSummaryEvery < time.Second || c.Query.UnauthenticatedSummaryEvery > 24*time.Hour {
		bad("query.unauthenticated_summary_every", "must be between 1s and 24h, got %s", c.Query.UnauthenticatedSummaryEvery)
	}
	if c.Query.UnauthenticatedRate < 1 || c.Query.UnauthenticatedRate > 1e6 {
		bad("query.unauthenticated_rate", "must be between 1 and 1000000, got %g", c.Query.UnauthenticatedRate)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %w", ErrInvalid, indented(errs))
}

func validDatabase(s string) bool {
	if len(s) == 0 || len(s) > 40 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// indented is errors.Join with one problem a line, so a person can read the list.
type indented []error

func (e indented) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n  ")
}

func (e indented) Unwrap() []error { return e }

func (c *Config) validateAggregator(bad func(path, format string, args ...any)) {
	a := c.Aggregator
	if a.GroupID == "" {
		bad("aggregator.group_id", "must not be empty")
	}
	if a.GroupID == c.Processor.GroupID {
		bad("aggregator.group_id", "must differ from processor.group_id (%q): the aggregator reads every event on its own", a.GroupID)
	}
	if a.Window < time.Minute || (24*time.Hour)%a.Window != 0 {
		bad("aggregator.window", "must divide 24h (e.g. 24h, 1h, 15m) and be at least 1m, got %s", a.Window)
	}
	if a.AllowedLateness < 0 {
		bad("aggregator.allowed_lateness", "must not be negative, got %s", a.AllowedLateness)
	}
	for _, e := range []struct {
		path string
		eps  float64
	}{{"aggregator.epsilon", a.Epsilon}, {"aggregator.week_epsilon", a.WeekEpsilon}, {"aggregator.month_epsilon", a.MonthEpsilon}} {
		if !(e.eps == 0 || (e.eps >= 1e-6 && e.eps <= 10)) {
			bad(e.path, "must be 0 (not released) or a number in [1e-6, 10], got %v", e.eps)
		}
	}
	if a.Epsilon == 0 && a.WeekEpsilon == 0 && a.MonthEpsilon == 0 {
		bad("aggregator.epsilon", "aggregator.epsilon, week_epsilon and month_epsilon are all 0: the aggregator would release nothing")
	}
	if !(a.SelectionShare > 0 && a.SelectionShare < 1) {
		bad("aggregator.selection_share", "must be strictly between 0 and 1, got %v", a.SelectionShare)
	}
	if !(a.SelectionDelta > 0 && a.SelectionDelta < 1e-3) {
		bad("aggregator.selection_delta", "must be in (0, 1e-3), got %v", a.SelectionDelta)
	}
	switch a.Mechanism {
	case "laplace":
	case "gaussian":
		if !(a.GaussianDelta > 0 && a.GaussianDelta < 1e-3) {
			bad("aggregator.gaussian_delta", "must be in (0, 1e-3) for the gaussian mechanism, got %v", a.GaussianDelta)
		}
	default:
		bad("aggregator.mechanism", "must be laplace or gaussian, got %q", a.Mechanism)
	}
	if a.BudgetEpsilon < 0 || a.BudgetDelta < 0 || a.BudgetDelta >= 1 {
		bad("aggregator.budget_epsilon", "budget_epsilon must be ≥ 0 and budget_delta in [0, 1) (0 takes the policy's)")
	}
	if a.BudgetEpsilonYear < 0 || a.BudgetDeltaYear < 0 || a.BudgetDeltaYear >= 1 {
		bad("aggregator.budget_epsilon_year", "the rolling year's ε must be ≥ 0 and its δ in [0, 1), got ε=%g δ=%g", a.BudgetEpsilonYear, a.BudgetDeltaYear)
	}
	for _, l := range []struct {
		path string
		ids  []string
	}{{"aggregator.features", a.Features}, {"aggregator.settings", a.Settings}, {"aggregator.editions", a.Editions}} {
		for _, id := range l.ids {
			if !event.IsID(id) || id == "other" {
				bad(l.path, "%q must match "+event.PatternID+" and not be 'other'", id)
			}
		}
	}
	if a.MaxTenantCells < 64 || a.MaxTenantCells > 1<<20 {
		bad("aggregator.max_tenant_cells", "must be between 64 and 1048576, got %d", a.MaxTenantCells)
	}
	if a.SealAfter < 0 || a.SealAfter > c.Events.MaxAge {
		bad("aggregator.seal_after", "must be between 0 and events.max_age (%s), got %s", c.Events.MaxAge, a.SealAfter)
	}
	if a.ReleaseInterval < 100*time.Millisecond {
		bad("aggregator.release_interval", "must be at least 100ms, got %s", a.ReleaseInterval)
	}
	if a.MaxBackoff < 100*time.Millisecond {
		bad("aggregator.max_backoff", "must be at least 100ms, got %s", a.MaxBackoff)
	}
	if a.StateRetention < time.Hour || a.StateRetention > 90*24*time.Hour {
		bad("aggregator.state_retention", "must be between 1h and 2160h, got %s", a.StateRetention)
	}
	if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		bad("aggregator.listen", "%q is not host:port", a.Listen)
	}
}
