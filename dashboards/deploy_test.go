package dashboards

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/query/principal"
)

// Paths are relative to this package's folder, where `go test` runs.
const (
	composePath           = "../docker-compose.yml"
	clusterComposePath    = "../docker-compose.cluster.yml"
	clusterPromConfigPath = "../deploy/cluster/prometheus/prometheus.yml"
	promConfigPath        = "prometheus/prometheus.yml"
	promRulesPath         = "prometheus/rules.yml"
	promRulesTest         = "prometheus/rules_test.yml"
	grafanaDir            = "grafana"
	datasourcesPath       = "grafana/provisioning/datasources/datasources.yml"
	providersPath         = "grafana/provisioning/dashboards/dashboards.yml"

	// roleImage is the one image every service built from the Dockerfile runs.
	roleImage = "shukei:dev"
)

// roles are the long-running Shukei services of the Compose stack, the port each serves
// /metrics on and the setting that names it (the collector and the query service serve metrics
// on their ops listeners, never on their public APIs).
var roles = []struct{ name, port, listen string }{
	{"collector", "9100", "ops_listen"},
	{"processor", "9101", "listen"},
	{"aggregator", "9102", "listen"},
	{"query", "9103", "ops_listen"},
}

// stack is one Compose file: the Prometheus configuration its prometheus service reads and how
// many instances of each role it runs (one, named after the role, unless said; more are named
// <role>-1, <role>-2, ...).
type stack struct {
	path       string
	promConfig string
	instances  map[string]int
}

// stacks are the Compose files: docker-compose.yml, one node of everything, and
// docker-compose.cluster.yml, the same stack on ClickHouse and Kafka clusters, with three
// processors and two aggregators. Every check of TestComposeConfig and TestComposeStack runs on
// each; TestComposeCluster adds what only the cluster has.
var stacks = []stack{
	{path: composePath, promConfig: promConfigPath},
	{path: clusterComposePath, promConfig: clusterPromConfigPath, instances: map[string]int{"processor": 3, "aggregator": 2}},
}

// oneShots prepare ClickHouse and Kafka and exit before the roles start.
var oneShots = []string{"migrate", "topics"}

// tokenService is the one-shot that registers Grafana's principal with the query service and
// writes its token for Grafana (promise 10).
const tokenService = "grafana-token"

// grafanaUID is the user the grafana image runs as (group root): the token file, mode 0600,
// must be its.
const grafanaUID = "472"

// metric is what a role promises to export: its type and its labels.
type metric struct {
	kind   string // counter or gauge
	labels []string
}

// pipelineMetrics is the contract between the roles and what dashboards and alerts read: every
// Prometheus expression in this folder may use only these metrics and their labels. Renaming a
// metric or label in a role means changing it here and in the JSON or rules in the same change;
// an end-to-end test can scrape each role's /metrics and compare it with this list.
var pipelineMetrics = map[string]metric{
	"shukei_events_total":                      {"counter", []string{"outcome", "reason"}},
	"shukei_collector_requests_total":          {"counter", []string{"code", "error"}},
	"shukei_processor_consumer_lag":            {"gauge", []string{"partition"}},
	"shukei_dlq_events_total":                  {"counter", []string{"reason"}},
	"shukei_clickhouse_insert_errors_total":    {"counter", []string{"what"}},
	"shukei_query_requests_total":              {"counter", []string{"report", "decision"}},
	"shukei_query_audit_failures_total":        {"counter", nil},
	"shukei_budget_epsilon_remaining":          {"gauge", []string{"purpose"}},
	"shukei_aggregator_release_refusals_total": {"counter", []string{"purpose", "reason"}},
	"shukei_aggregator_late_events_total":      {"counter", nil},
	"shukei_processor_marts_unrepaired_total":  {"counter", nil},
	// Prometheus's own, one series per scrape target.
	"up": {"gauge", nil},
}

// targetLabels are on every scraped series: job and instance from Prometheus, role from
// prometheus.yml.
var targetLabels = []string{"job", "instance", "role"}

// requiredAlerts must exist in rules.yml.
var requiredAlerts = []string{"ShukeiConsumerLagHigh", "ShukeiDLQRateHigh", "ShukeiInsertErrors", "ShukeiPrivacyBudgetLow", "ShukeiReleaseRefused", "ShukeiAuditWriteFailing", "ShukeiMartUnrepaired"}

// (a) Compose itself accepts each file.
// Grafana has no default admin password: without GRAFANA_ADMIN_PASSWORD Compose refuses.
func TestComposeConfig(t *testing.T) {
	bin := requireTool(t, "docker-compose", "docker-compose")
	for _, st := range stacks {
		t.Run(filepath.Base(st.path), func(t *testing.T) {
			// The secrets 'shukei keys compose' writes into .env; GRAFANA_ADMIN_PASSWORD alone unset.
			for _, k := range []string{"SHUKEI_MASTER_KEY", "SHUKEI_CLICKHOUSE_PASSWORD", "SHUKEI_USERS_KEY", "SHUKEI_COLLECTOR_KEY",
				"SHUKEI_PROCESSOR_KEY", "SHUKEI_AGGREGATOR_KEY", "SHUKEI_QUERY_KEY", "SHUKEI_RETENTION_KEY", "SHUKEI_AUDIT_KEY", "SHUKEI_LEDGER_KEY"} {
				t.Setenv(k, strings.Repeat("5a", 32))
			}
			t.Setenv("GRAFANA_ADMIN_PASSWORD", "")
			os.Unsetenv("GRAFANA_ADMIN_PASSWORD")
			var refused bytes.Buffer
			cmd := exec.Command(bin, "-f", st.path, "config", "-q")
			cmd.Stdout, cmd.Stderr = &refused, &refused
			if err := cmd.Run(); err == nil || !strings.Contains(refused.String(), "GRAFANA_ADMIN_PASSWORD") {
				t.Errorf("docker-compose config without GRAFANA_ADMIN_PASSWORD: %v\n%s (want a refusal naming it: no default admin password)", err, refused.String())
			}
			t.Setenv("GRAFANA_ADMIN_PASSWORD", "a-long-random-password")
			out := runTool(t, bin, "-f", st.path, "config", "-q")
			if strings.TrimSpace(out) != "" {
				t.Errorf("docker-compose config -q printed warnings (a variable without a ${VAR:-default}?):\n%s", out)
			}
		})
	}
}

// (b) Each stack is wired the way the roles need it.
func TestComposeStack(t *testing.T) {
	for _, st := range stacks {
		t.Run(filepath.Base(st.path), func(t *testing.T) {
			checkStack(t, st)
		})
	}
}

func checkStack(t *testing.T, st stack) {
	c := loadComposeFile(t, st.path)

	t.Run("every service built from the Dockerfile runs the one image", func(t *testing.T) {
		for _, name := range sortedKeys(c.Services) {
			s := c.Services[name]
			if s.Build == nil && s.Image != roleImage {
				continue
			}
			if s.Image != roleImage {
				t.Errorf("%s: builds the Dockerfile but is tagged %q, want %q (one image for every role)", name, s.Image, roleImage)
			}
			if ctx := buildContext(s.Build); ctx != "." {
				t.Errorf("%s: build context %q, want \".\" (the repository root, where the Dockerfile is)", name, ctx)
			}
		}
	})

	for _, r := range roles {
		t.Run("role "+r.name, func(t *testing.T) {
			names := roleInstances(c, r.name)
			if want := instanceNames(r.name, st.instanceCount(r.name)); !slices.Equal(names, want) {
				t.Fatalf("services %q run it, want %q", names, want)
			}
			for _, name := range names {
				s := c.Services[name]
				checkShukeiService(t, r.name, s)
				if !slices.Contains(containerPorts(s), r.port) {
					t.Errorf("%s: publishes container ports %v, want %s (its metrics port, scraped by %s)", name, containerPorts(s), r.port, st.promConfig)
				}
				cfg := roleConfig(t, s)
				checkListen(t, r.name, r.listen, r.port, cfg)
				deps := dependsOn(s)
				for _, o := range oneShots {
					if deps[o] != "service_completed_successfully" {
						t.Errorf("%s: depends_on %s: condition %q, want service_completed_successfully (schema and topics first)", name, o, deps[o])
					}
				}
				if s.Restart == "" || s.Restart == "no" {
					t.Errorf("%s: restart %q: a long-running role should come back after a crash", name, s.Restart)
				}
			}
		})
	}
	for _, name := range oneShots {
		t.Run("one-shot "+name, func(t *testing.T) {
			s, ok := c.Services[name]
			if !ok {
				t.Fatalf("no service %q", name)
			}
			checkShukeiService(t, name, s)
			roleConfig(t, s)
			if s.Restart != "no" {
				t.Errorf("restart %q, want \"no\": the roles wait for it to complete successfully", s.Restart)
			}
		})
	}

	// Promise 10: Grafana holds no ClickHouse credentials; it reads the query service's reports
	// as a principal of its own, whose grant names only the aggregate purposes.
	t.Run("one-shot "+tokenService, func(t *testing.T) {
		s, ok := c.Services[tokenService]
		if !ok {
			t.Fatalf("no service %q", tokenService)
		}
		if s.Image != roleImage || s.Build == nil {
			t.Errorf("image %q, build %v: want image %q built from the Dockerfile", s.Image, s.Build, roleImage)
		}
		roleConfig(t, s)
		if s.Restart != "no" {
			t.Errorf("restart %q, want \"no\": Grafana waits for it to complete successfully", s.Restart)
		}
		if cond := dependsOn(s)["migrate"]; cond != "service_completed_successfully" {
			t.Errorf("depends_on migrate: condition %q, want service_completed_successfully (the principals table first)", cond)
		}
		if len(s.Command) < 2 || s.Command[0] != "principals" || s.Command[1] != "add" {
			t.Fatalf("command %q, want [principals add ...]", s.Command)
		}
		grant := composeGrant(t, c)
		if grant.ID != grafanaPrincipal || grant.Kind != principal.Employee || !sameSet(grant.Purposes, grafanaPurposes) {
			t.Errorf("registers %s (%s) for %q, want %s (employee) for exactly %q", grant.ID, grant.Kind, grant.Purposes, grafanaPrincipal, grafanaPurposes)
		}
		for _, f := range []string{"--roles", "--expires", "--contract-ref"} {
			if slices.Contains(s.Command, f) || slices.ContainsFunc(s.Command, func(a string) bool { return strings.HasPrefix(a, f+"=") }) {
				t.Errorf("command sets %s: the dashboards' principal needs none", f)
			}
		}
		if !slices.Contains(s.Command, "--exist-ok") {
			t.Errorf("command %q has no --exist-ok: a second `up` would fail on the existing principal", s.Command)
		}
		if flagValue(s.Command, "--token-file") == "" {
			t.Errorf("command %q has no --token-file: the token would be printed to the log", s.Command)
		}
		if uid, _, _ := strings.Cut(s.User, ":"); uid != grafanaUID {
			t.Errorf("user %q: run it as Grafana's uid %s, or Grafana cannot read the 0600 token file", s.User, grafanaUID)
		}
		if g := c.Services["grafana"].User; g != "" && g != s.User {
			t.Errorf("grafana runs as %q, %s as %q: the token file is the writer's, mode 0600", g, tokenService, s.User)
		}
		// The token's volume is mounted by the one-shot and Grafana only.
		tv, _, _ := volumeAt(s, flagValue(s.Command, "--token-file"))
		if tv == "" {
			t.Fatalf("--token-file %s is in no named volume", flagValue(s.Command, "--token-file"))
		}
		for _, name := range sortedKeys(c.Services) {
			for _, v := range c.Services[name].Volumes {
				if src, _ := mount(v); src == tv && name != tokenService && name != "grafana" {
					t.Errorf("%s mounts %q, the volume of Grafana's query token", name, tv)
				}
			}
		}
	})

	t.Run("grafana", func(t *testing.T) {
		g, ok := c.Services["grafana"]
		if !ok {
			t.Fatal("no grafana service")
		}
		deps := dependsOn(g)
		if deps[tokenService] != "service_completed_successfully" {
			t.Errorf("depends_on %s: condition %q, want service_completed_successfully (its token first)", tokenService, deps[tokenService])
		}
		clickhouses := servicesOfImage(c, clickhouseServerImage)
		for _, ch := range clickhouses {
			if _, ok := deps[ch]; ok {
				t.Errorf("depends on %s: Grafana reads the query service, not ClickHouse", ch)
			}
		}
		for k, v := range g.Environment {
			if strings.Contains(strings.ToLower(k+"="+v), "clickhouse") {
				t.Errorf("environment %s=%s: Grafana holds no ClickHouse credentials (promise 10)", k, v)
			}
		}
		// No volume a ClickHouse service or migrate writes (users.d, passwords).
		for _, other := range append(clickhouses, "migrate") {
			for _, v := range c.Services[other].Volumes {
				src, _ := mount(v)
				for _, gv := range g.Volumes {
					if gsrc, _ := mount(gv); gsrc == src && !isBindSource(src) {
						t.Errorf("grafana mounts %q, which %s mounts too", src, other)
					}
				}
			}
		}
		checkPlugins(t, g, loadDatasources(t))
	})

	t.Run("grafana reads the provisioning, the dashboards and its token", func(t *testing.T) {
		checkGrafanaWiring(t, c, loadDatasources(t))
	})

	// Promise 16: each container gets only its own secrets, each from a variable Compose
	// requires (no default secret).
	t.Run("each container gets only its own secrets", func(t *testing.T) {
		want := map[string][]string{
			"migrate":       {"SHUKEI_CLICKHOUSE_PASSWORD", "SHUKEI_CLICKHOUSE_USERS_KEY"},
			"grafana-token": {"SHUKEI_CLICKHOUSE_PASSWORD"},
			"topics":        nil,
			"collector":     {"SHUKEI_CLICKHOUSE_ROLE_KEY"},
			"query":         {"SHUKEI_CLICKHOUSE_ROLE_KEY", "SHUKEI_AUDIT_KEY"},
			"processor":     {"SHUKEI_CLICKHOUSE_ROLE_KEY", "SHUKEI_ANONYMIZER_MASTER_KEY"},
			"aggregator":    {"SHUKEI_CLICKHOUSE_ROLE_KEY", "SHUKEI_ANONYMIZER_MASTER_KEY", "SHUKEI_LEDGER_KEY"},
			"retention":     {"SHUKEI_CLICKHOUSE_ROLE_KEY", "SHUKEI_ANONYMIZER_MASTER_KEY", "SHUKEI_AUDIT_KEY"},
		}
		secret := func(k string) bool {
			for _, w := range []string{"PASSWORD", "_KEY", "SECRET", "TOKEN"} {
				if strings.Contains(k, w) && !strings.HasSuffix(k, "_FILE") {
					return true
				}
			}
			return false
		}
		for _, name := range sortedKeys(c.Services) {
			s := c.Services[name]
			if s.Image != roleImage {
				continue
			}
			// An instance of a role (processor-2) holds the role's secrets.
			role := roleOf(name)
			allowed, ok := want[role]
			if !ok {
				t.Errorf("%s: a Shukei service this test does not know; say which secrets it needs", name)
				continue
			}
			for k, v := range s.Environment {
				if !secret(k) {
					continue
				}
				if !slices.Contains(allowed, k) {
					t.Errorf("%s holds %s, a secret its job does not need", name, k)
				}
				if !strings.Contains(v, ":?") {
					t.Errorf("%s: %s=%s has a default or a literal: secrets come from .env ('shukei keys compose')", name, k, v)
				}
			}
			for _, k := range allowed {
				if _, ok := s.Environment[k]; !ok {
					t.Errorf("%s lacks %s", name, k)
				}
			}
			if v := s.Environment["SHUKEI_CLICKHOUSE_ROLE_KEY"]; v != "" && !strings.Contains(v, "SHUKEI_"+strings.ToUpper(role)+"_KEY") {
				t.Errorf("%s's role key is %s: want its own, ${SHUKEI_%s_KEY}", name, v, strings.ToUpper(role))
			}
		}
	})

	t.Run("migrate writes no credential for Grafana", func(t *testing.T) {
		for k := range c.Services["migrate"].Environment {
			if strings.Contains(k, "DASHBOARDS") {
				t.Errorf("migrate sets %s: the dashboards' ClickHouse user is gone (promise 10)", k)
			}
		}
	})

	t.Run("every published port binds 127.0.0.1", func(t *testing.T) {
		for _, name := range sortedKeys(c.Services) {
			for _, p := range c.Services[name].Ports {
				if ip := hostIP(p); ip != "127.0.0.1" {
					t.Errorf("%s: port %v binds %q; publish as \"127.0.0.1:HOST:CONTAINER\"", name, p, ip)
				}
			}
		}
	})

	t.Run("no host port is published twice", func(t *testing.T) {
		by := map[string]string{} // host port -> service
		for _, name := range sortedKeys(c.Services) {
			for _, p := range c.Services[name].Ports {
				hp := hostPort(p)
				if hp == "" {
					t.Errorf("%s: port %v has no fixed host port", name, p)
					continue
				}
				if other, dup := by[hp]; dup {
					t.Errorf("%s and %s both publish host port %s", other, name, hp)
				}
				by[hp] = name
			}
		}
	})

	t.Run("depends_on conditions can be met", func(t *testing.T) {
		for _, name := range sortedKeys(c.Services) {
			for dep, cond := range dependsOn(c.Services[name]) {
				d, ok := c.Services[dep]
				switch {
				case !ok:
					t.Errorf("%s: depends on unknown service %q", name, dep)
				case cond == "service_healthy" && (d.Healthcheck == nil || len(d.Healthcheck.Test) == 0):
					t.Errorf("%s: waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				case cond == "service_completed_successfully" && d.Restart != "no":
					t.Errorf("%s: waits for %s to complete, but %s restarts (%q)", name, dep, dep, d.Restart)
				}
			}
		}
		// Every Kafka broker, ClickHouse server and Keeper node says when it is ready.
		for _, image := range []string{kafkaImage, clickhouseServerImage} {
			infra := servicesOfImage(c, image)
			if len(infra) == 0 {
				t.Errorf("no %s service", image)
			}
			for _, name := range append(infra, servicesOfImage(c, clickhouseKeeperImage)...) {
				if s := c.Services[name]; s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
					t.Errorf("%s: no healthcheck", name)
				}
			}
		}
		// The one-shots wait for every node they talk to: migrate for each ClickHouse server
		// (distributed DDL waits for all), topics for each broker.
		for oneShot, image := range map[string]string{"migrate": clickhouseServerImage, "topics": kafkaImage} {
			deps := dependsOn(c.Services[oneShot])
			for _, name := range servicesOfImage(c, image) {
				if deps[name] != "service_healthy" {
					t.Errorf("%s: depends_on %s: condition %q, want service_healthy", oneShot, name, deps[name])
				}
			}
		}
	})

	t.Run("bind-mounted paths exist", func(t *testing.T) {
		for _, name := range sortedKeys(c.Services) {
			for _, v := range c.Services[name].Volumes {
				src, _ := mount(v)
				if !isBindSource(src) {
					if _, ok := c.Volumes[src]; !ok {
						t.Errorf("%s: named volume %q is not declared under volumes:", name, src)
					}
					continue
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(st.path), src)); err != nil {
					t.Errorf("%s: bind mount source: %v", name, err)
				}
			}
		}
	})

	// Prometheus reads st.promConfig, which scrapes every instance of every role.
	var pc promConfig
	readYAML(t, st.promConfig, &pc)

	t.Run("prometheus scrapes every role instance", func(t *testing.T) {
		scraped := map[string]string{} // target -> role label
		for _, sc := range pc.ScrapeConfigs {
			if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
				t.Errorf("job %s: metrics_path %q, the roles serve /metrics", sc.JobName, sc.MetricsPath)
			}
			for _, stc := range sc.StaticConfigs {
				for _, target := range stc.Targets {
					scraped[target] = stc.Labels["role"]
				}
			}
		}
		for _, r := range roles {
			for _, name := range roleInstances(c, r.name) {
				target := net.JoinHostPort(name, r.port)
				role, ok := scraped[target]
				if !ok {
					t.Errorf("%s: no scrape target %s (compose service name and metrics port)", st.promConfig, target)
				} else if role != r.name {
					t.Errorf("%s: target %s: role label %q, want %q (dashboards use it)", st.promConfig, target, role, r.name)
				}
				delete(scraped, target)
			}
		}
		for target, role := range scraped {
			if role != "" {
				t.Errorf("%s: target %s (role %s) is no role instance of %s", st.promConfig, target, role, st.path)
			}
		}
	})

	t.Run("prometheus files resolve in the container and in the checkout", func(t *testing.T) {
		prom := c.Services["prometheus"]
		var inContainer string
		for _, arg := range prom.Command {
			if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
				inContainer = v
			}
		}
		if inContainer == "" {
			t.Fatalf("prometheus service: no --config.file in command %q", prom.Command)
		}
		checkMountedAs(t, prom, inContainer, st.promConfig)
		for _, f := range pc.RuleFiles {
			if filepath.IsAbs(f) {
				t.Errorf("rule_files %q: use a path relative to prometheus.yml, so promtool and the container agree", f)
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(st.promConfig), f)); err != nil {
				t.Errorf("rule_files: %v", err)
			}
			checkMountedAs(t, prom, path.Join(path.Dir(inContainer), f), filepath.Join(filepath.Dir(st.promConfig), f))
		}
	})
}

// promConfig is the part of a prometheus.yml the checks read.
type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// instanceCount is how many instances of role st runs.
func (st stack) instanceCount(role string) int {
	if n, ok := st.instances[role]; ok {
		return n
	}
	return 1
}

// instanceNames are the service names of n instances of role: the role's own for one,
// <role>-1 ... <role>-n for more.
func instanceNames(role string, n int) []string {
	if n == 1 {
		return []string{role}
	}
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("%s-%d", role, i))
	}
	return out
}

// roleInstances lists the services that are role or an instance of it (role-N), sorted.
func roleInstances(c compose, role string) []string {
	var out []string
	for _, name := range sortedKeys(c.Services) {
		if roleOf(name) == role {
			out = append(out, name)
		}
	}
	return out
}

// roleOf is the role a service name is an instance of: processor-2 → processor.
func roleOf(service string) string {
	if m := instanceName.FindStringSubmatch(service); m != nil {
		return m[1]
	}
	return service
}

var instanceName = regexp.MustCompile(`^([a-z]+)-[1-9][0-9]*$`)

// The official images of the stacks' infrastructure, without their tags.
const (
	kafkaImage            = "apache/kafka"
	clickhouseServerImage = "clickhouse/clickhouse-server"
	clickhouseKeeperImage = "clickhouse/clickhouse-keeper"
)

// servicesOfImage lists the services that run image (any tag), sorted.
func servicesOfImage(c compose, image string) []string {
	var out []string
	for _, name := range sortedKeys(c.Services) {
		if repo, _, _ := strings.Cut(c.Services[name].Image, ":"); repo == image {
			out = append(out, name)
		}
	}
	return out
}

// checkGrafanaWiring checks what Grafana's data sources and dashboards need from a stack: the
// hosts they call are services of it (never ClickHouse), the variables datasources.yml reads are
// set, the query token file is the one the token one-shot writes, and the provisioning and
// dashboard folders are mounted from this folder.
func checkGrafanaWiring(t *testing.T, c compose, ds []provisionedDatasource) {
	t.Helper()
	grafana, ok := c.Services["grafana"]
	if !ok {
		t.Fatal("no grafana service")
	}
	clickhouses := servicesOfImage(c, clickhouseServerImage)
	for _, d := range ds {
		host, _ := d.JSONData["host"].(string)
		if d.URL != "" {
			host = strings.TrimPrefix(strings.TrimPrefix(d.URL, "http://"), "https://")
			host, _, _ = net.SplitHostPort(strings.TrimSuffix(host, "/"))
		}
		if _, ok := c.Services[host]; !ok {
			t.Errorf("%s: host %q is not a compose service", d.Name, host)
		}
		// Promise 10: Grafana holds no ClickHouse credentials and reads no database.
		if host == "clickhouse" || slices.Contains(clickhouses, host) {
			t.Errorf("%s: a data source on %q, a ClickHouse server; Grafana reads Shukei's data only through the query service", d.Name, host)
		}
	}
	checkReportsDatasource(t, ds, c)
	b, err := os.ReadFile(datasourcesPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(string(b), -1) {
		if m[1] == "__file" {
			continue // checked below
		}
		if _, ok := grafana.Environment[m[1]]; !ok {
			t.Errorf("datasources.yml reads $%s, which the grafana service's environment does not set", m[1])
		}
	}
	// A secret read from a file ($__file{path}) is the query token the one-shot writes, into
	// a named volume both services mount.
	for _, m := range regexp.MustCompile(`\$__file\{([^}]+)\}`).FindAllStringSubmatch(string(b), -1) {
		checkTokenFile(t, c, grafana, m[1])
	}
	checkMountedAs(t, grafana, "/etc/grafana/provisioning/datasources", filepath.Dir(datasourcesPath))
	checkMountedAs(t, grafana, "/etc/grafana/provisioning/dashboards", filepath.Dir(providersPath))
	// The dashboard provider reads this folder.
	var pv struct {
		Providers []struct {
			Name    string `yaml:"name"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providersPath, &pv)
	if len(pv.Providers) == 0 {
		t.Error("no dashboard providers")
	}
	for _, p := range pv.Providers {
		checkMountedAs(t, grafana, p.Options.Path, grafanaDir)
	}
}

// checkShukeiService checks what every service running the Shukei image needs.
func checkShukeiService(t *testing.T, name string, s service) {
	t.Helper()
	if s.Image != roleImage || s.Build == nil {
		t.Errorf("image %q, build %v: want image %q built from the Dockerfile", s.Image, s.Build, roleImage)
	}
	if !slices.Equal(s.Command, []string{name}) {
		t.Errorf("command %q, want [%q] (the image's entrypoint is the shukei binary)", s.Command, name)
	}
}

// roleConfig applies a service's SHUKEI_* environment the way the binary does and checks the
// result: an unknown variable or an invalid value would stop the role at start-up.
func roleConfig(t *testing.T, s service) config.Config {
	t.Helper()
	env, err := interpolate(s.Environment)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := cfg.ApplyEnv(env); err != nil {
		t.Fatalf("environment: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("environment: %v", err)
	}
	// Inside a container, loopback is the container itself: the defaults point at the host.
	for _, a := range append(slices.Clone(cfg.Kafka.Brokers), cfg.ClickHouse.Addr...) {
		if host, _, _ := net.SplitHostPort(a); isLoopback(host) {
			t.Errorf("address %s is loopback in the container; set SHUKEI_KAFKA_BROKERS / SHUKEI_CLICKHOUSE_ADDR to the compose service", a)
		}
	}
	return cfg
}

// checkListen: any <role>.*listen setting must accept connections from other containers, and
// <role>.listen must use the port that is published and scraped.
func checkListen(t *testing.T, role, listen, port string, cfg config.Config) {
	t.Helper()
	for _, f := range cfg.Fields() {
		if !strings.HasPrefix(f.Path, role+".") || !strings.HasSuffix(f.Path, "listen") {
			continue
		}
		host, p, err := net.SplitHostPort(f.String())
		if err != nil {
			t.Errorf("%s = %q: %v", f.Path, f.String(), err)
			continue
		}
		if isLoopback(host) {
			t.Errorf("%s = %q: unreachable through a published port; set %s=:%s in docker-compose.yml", f.Path, f.String(), f.Env, port)
		}
		if f.Path == role+"."+listen && p != port {
			t.Errorf("%s = %q, want port %s (published and scraped)", f.Path, f.String(), port)
		}
	}
}

// TestDockerfile checks the few lines of the Dockerfile the stack relies on: a Go toolchain of
// the go.mod release (an older one cannot build the module), a static build of ./cmd/shukei,
// and the binary as the entrypoint (compose passes only the subcommand).
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goLine == nil {
		t.Fatal("go.mod: no go directive")
	}
	for _, tc := range []struct{ name, pattern string }{
		{"builder is Go " + string(goLine[1]), `(?m)^FROM golang:` + regexp.QuoteMeta(string(goLine[1])) + `[-.\w]*\s+AS\s+\w+`},
		{"modules download in their own layer", `(?m)^COPY go\.mod go\.sum \./\s*\nRUN go mod download`},
		{"static build", `(?m)^ENV CGO_ENABLED=0`},
		{"builds ./cmd/shukei with -trimpath", `go build -trimpath .*-o /out/shukei \./cmd/shukei`},
		{"entrypoint is the binary", `(?m)^ENTRYPOINT \["/usr/local/bin/shukei"\]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !regexp.MustCompile(tc.pattern).Match(df) {
				t.Errorf("Dockerfile has no line matching %s", tc.pattern)
			}
		})
	}
}

// (c) Prometheus accepts each stack's configuration and the rules, and the rules behave as
// their unit tests say. That every role instance is scraped is a check of TestComposeStack.
func TestPrometheus(t *testing.T) {
	type promtoolRun struct {
		name string
		args []string
	}
	var checks []promtoolRun
	for _, st := range stacks {
		checks = append(checks, promtoolRun{"check config " + st.promConfig, []string{"check", "config", st.promConfig}})
	}
	checks = append(checks,
		promtoolRun{"check rules", []string{"check", "rules", promRulesPath}},
		promtoolRun{"test rules", []string{"test", "rules", promRulesTest}})
	for _, tc := range checks {
		t.Run("promtool "+tc.name, func(t *testing.T) {
			runTool(t, requireTool(t, "promtool", "prometheus"), tc.args...)
		})
	}

	t.Run("alert rules", func(t *testing.T) {
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Record      string            `yaml:"record"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		readYAML(t, promRulesPath, &rf)
		var tests struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		readYAML(t, promRulesTest, &tests)
		tested := map[string]bool{}
		for _, tc := range tests.Tests {
			for _, a := range tc.AlertRuleTest {
				tested[a.Alertname] = true
			}
		}
		seen := map[string]bool{}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				name := r.Alert + r.Record
				seen[name] = true
				for _, p := range checkExpr(r.Expr, r.Annotations["summary"]+r.Annotations["description"]) {
					t.Errorf("%s: %s", name, p)
				}
				if r.Alert == "" {
					continue
				}
				if r.For == "" {
					t.Errorf("%s: no for:, so one bad scrape pages someone", name)
				}
				if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
					t.Errorf("%s: severity %q, want warning or critical", name, sev)
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("%s: no %s annotation", name, a)
					}
				}
				if !tested[name] {
					t.Errorf("%s: no alert_rule_test in %s", name, promRulesTest)
				}
			}
		}
		for _, a := range requiredAlerts {
			if !seen[a] {
				t.Errorf("alert %s is missing", a)
			}
		}
	})
}

// stableDashboards are linked to (from each other, from runbooks, from bookmarks): each must
// keep its uid.
var stableDashboards = []string{"shukei-pipeline", "shukei-purposes"}

// (d) Dashboards load, have stable unique uids, and refer only to provisioned data sources
// (with their provisioned types); Prometheus queries read only metrics the roles export, with
// valid PromQL; Infinity queries use the plugin's query model and name one report of an
// aggregate purpose of the query service, with its own parameters and columns
// (checkInfinityTarget; TestReportPanelsOnQueryService runs them). What the data sources need
// from each stack (the hosts they call, the token, the mounts) is TestComposeStack's
// (checkGrafanaWiring).
func TestDashboards(t *testing.T) {
	ds := loadDatasources(t)

	dsType := map[string]string{} // uid -> type; "" is the default data source
	t.Run("datasources", func(t *testing.T) {
		for _, d := range ds {
			if d.UID == "" {
				t.Errorf("%s: no uid; dashboards need a stable one to refer to", d.Name)
			}
			if _, dup := dsType[d.UID]; dup {
				t.Errorf("%s: uid %q used twice", d.Name, d.UID)
			}
			dsType[d.UID] = d.Type
			if d.IsDefault {
				if _, dup := dsType[""]; dup {
					t.Errorf("%s: a second default data source", d.Name)
				}
				dsType[""] = d.Type
			}
			// Promise 10: Grafana holds no ClickHouse credentials and reads no database (that no
			// data source calls a ClickHouse server of a stack is checkGrafanaWiring's).
			if strings.Contains(strings.ToLower(d.Type), "clickhouse") {
				t.Errorf("%s: a %s data source; Grafana reads Shukei's data only through the query service", d.Name, d.Type)
			}
			if d.Type != "prometheus" && d.Type != infinityType {
				t.Errorf("%s: type %q; the stack's data sources are Prometheus and Infinity (the query service's reports)", d.Name, d.Type)
			}
		}
	})

	files := dashboardFiles(t)
	uids := map[string]string{}
	type query struct{ where, expr string }
	var queries []query
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var d dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("not valid dashboard JSON: %v", err)
			}
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q, title %q: both must be set (the uid keeps links stable)", d.UID, d.Title)
			}
			// The uid is the file's name: a copied file cannot keep its source's uid, and
			// renaming the uid, which breaks every link to the dashboard, shows as a rename.
			if want := strings.TrimSuffix(filepath.Base(file), ".json"); d.UID != want {
				t.Errorf("uid %q, want %q (the file's name)", d.UID, want)
			}
			if !regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`).MatchString(d.UID) {
				t.Errorf("uid %q: use at most 40 of [a-z0-9-] (Grafana's limit)", d.UID)
			}
			if other, dup := uids[d.UID]; dup {
				t.Errorf("uid %q is also used by %s", d.UID, other)
			}
			uids[d.UID] = file
			// resolve checks a data source reference and returns its provisioned type.
			resolve := func(where string, ref any) (string, bool) {
				uid, typ, err := datasourceRef(ref)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					return "", false
				}
				provisioned, ok := dsType[uid]
				if !ok {
					t.Errorf("%s: data source uid %q is not provisioned in %s", where, uid, datasourcesPath)
					return "", false
				}
				if typ != "" && typ != provisioned {
					t.Errorf("%s: data source %q has type %q in the JSON, %q in %s", where, uid, typ, provisioned, datasourcesPath)
				}
				return provisioned, true
			}
			for _, a := range d.Annotations.List {
				if uid, typ, _ := datasourceRef(a.Datasource); a.BuiltIn == 1 && typ == "grafana" && uid == "-- Grafana --" {
					continue // Grafana's own annotations
				}
				resolve(fmt.Sprintf("annotation %q", a.Name), a.Datasource)
			}
			for _, v := range d.Templating.List {
				if v.Datasource != nil {
					resolve(fmt.Sprintf("variable %q", v.Name), v.Datasource)
				}
			}
			ids := map[int]bool{}
			for _, p := range d.allPanels() {
				where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
				if p.ID == 0 || ids[p.ID] {
					t.Errorf("%s: id missing or used twice", where)
				}
				ids[p.ID] = true
				if p.Type == "row" {
					continue
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no queries", where)
				}
				resolve(where, p.Datasource)
				for _, tg := range p.Targets {
					src := tg.Datasource
					if src == nil {
						src = p.Datasource
					}
					typ, ok := resolve(fmt.Sprintf("%s, query %s", where, tg.RefID), src)
					if !ok {
						continue
					}
					if typ == infinityType {
						_, probs := checkInfinityTarget(d, p, tg)
						for _, prob := range probs {
							t.Errorf("%s, query %s: %s", where, tg.RefID, prob)
						}
						continue
					}
					if typ != "prometheus" {
						t.Errorf("%s, query %s: data source type %q: this test checks only prometheus and %s queries; add a check for it", where, tg.RefID, typ, infinityType)
						continue
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s, query %s: empty expr", where, tg.RefID)
						continue
					}
					for _, prob := range checkExpr(tg.Expr, tg.LegendFormat) {
						t.Errorf("%s, query %s: %s", where, tg.RefID, prob)
					}
					queries = append(queries, query{fmt.Sprintf("%s %s %s", d.UID, where, tg.RefID), tg.Expr})
				}
			}
		})
	}
	for _, uid := range stableDashboards {
		if _, ok := uids[uid]; !ok {
			t.Errorf("no dashboard has uid %q any more: links to it break", uid)
		}
	}

	t.Run("PromQL parses", func(t *testing.T) {
		bin := requireTool(t, "promtool", "prometheus")
		// promtool parses expressions only inside rule files: wrap each query in an alert, with
		// Grafana's interval variables replaced by a duration.
		type rule struct {
			Alert  string `yaml:"alert"`
			Expr   string `yaml:"expr"`
			Labels struct {
				Where string `yaml:"where"`
			} `yaml:"labels"`
		}
		var rules []rule
		grafanaVar := regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)
		for i, q := range queries {
			r := rule{Alert: fmt.Sprintf("DashboardQuery%d", i), Expr: grafanaVar.ReplaceAllString(q.expr, "5m")}
			r.Labels.Where = q.where
			rules = append(rules, r)
		}
		doc := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
		b, err := yaml.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		runTool(t, bin, "check", "rules", path)
	})
}

// TestPromQLNames pins the tokenizer the metric checks rely on.
func TestPromQLNames(t *testing.T) {
	for _, tc := range []struct {
		expr            string
		metrics, labels []string
	}{
		{`sum by (outcome) (rate(shukei_events_total[$__rate_interval]))`, []string{"shukei_events_total"}, []string{"outcome"}},
		{`up{job=~"shukei-.*"}`, []string{"up"}, []string{"job"}},
		{`sum(rate(a_total{reason!="x y"}[5m] offset 1h)) / ignoring(reason) sum without (instance) (rate(b_total[5m]))`, []string{"a_total", "b_total"}, []string{"reason", "instance"}},
		{`histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le))`, []string{"x_bucket"}, []string{"le"}},
		{`max_over_time(g[1h:5m]) > 1e3 and on() vector(1)`, []string{"g"}, nil},
		{`topk(5, count_values("v", m)) * on (a) group_left (b) n`, []string{"m", "n"}, []string{"a", "b"}},
		{`min by (purpose) (shukei_budget_epsilon_remaining) < 0.5`, []string{"shukei_budget_epsilon_remaining"}, []string{"purpose"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			m, l := promqlNames(tc.expr)
			if !slices.Equal(m, tc.metrics) || !slices.Equal(l, tc.labels) {
				t.Errorf("got metrics %q labels %q, want %q %q", m, l, tc.metrics, tc.labels)
			}
		})
	}
}

// checkExpr lists what expr, or the text rendered from its result (a legend or an alert's
// annotations), uses beyond pipelineMetrics.
func checkExpr(expr, rendered string) []string {
	metrics, labels := promqlNames(expr)
	if len(metrics) == 0 {
		return []string{fmt.Sprintf("%q reads no metric", expr)}
	}
	var probs []string
	allowed := slices.Clone(targetLabels)
	for _, m := range metrics {
		pm, ok := pipelineMetrics[m]
		if !ok {
			probs = append(probs, fmt.Sprintf("metric %s is not one the roles export (pipelineMetrics in deploy_test.go)", m))
			continue
		}
		allowed = append(allowed, pm.labels...)
	}
	for _, m := range regexp.MustCompile(`\{\{\s*(?:\$labels\.)?([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\$labels\.([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(rendered, -1) {
		if l := m[1] + m[2]; !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	for _, l := range labels {
		if !slices.Contains(allowed, l) {
			probs = append(probs, fmt.Sprintf("label %s is not on %v (nor a target label %v)", l, metrics, targetLabels))
		}
	}
	return probs
}

// promqlNames returns the metric names and label names a PromQL expression refers to, each once,
// in order. It is a tokenizer, not a parser (promtool checks the syntax): strings, [ranges]
// and Grafana $variables are skipped; an identifier followed by '(' is a function; identifiers
// inside {...} and in the lists after by, without, on, ignoring, group_left and group_right are
// labels; any other identifier that is not a keyword or aggregation is a metric.
func promqlNames(expr string) (metrics, labels []string) {
	grouping := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	keyword := map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true,
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}
	add := func(list *[]string, s string) {
		if !slices.Contains(*list, s) {
			*list = append(*list, s)
		}
	}
	identStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
	ident := func(c byte) bool { return identStart(c) || '0' <= c && c <= '9' }
	skipTo := func(i int, end byte) int {
		for i < len(expr) && expr[i] != end {
			i++
		}
		return i + 1
	}
	inBraces, inLabelList := false, false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '[':
			i = skipTo(i, ']')
		case c == '{':
			inBraces, i = true, i+1
		case c == '}':
			inBraces, i = false, i+1
		case c == ')' && inLabelList:
			inLabelList, i = false, i+1
		case c == '$':
			if i+1 < len(expr) && expr[i+1] == '{' {
				i = skipTo(i, '}')
				continue
			}
			for i++; i < len(expr) && ident(expr[i]); i++ {
			}
		case '0' <= c && c <= '9' || c == '.':
			for i++; i < len(expr) && (ident(expr[i]) || expr[i] == '.'); i++ {
			}
		case identStart(c):
			j := i
			for j < len(expr) && ident(expr[j]) {
				j++
			}
			word := expr[i:j]
			next := j
			for next < len(expr) && (expr[next] == ' ' || expr[next] == '\t' || expr[next] == '\n') {
				next++
			}
			i = j
			switch lower := strings.ToLower(word); {
			case inBraces || inLabelList:
				add(&labels, word)
			case grouping[lower]:
				if next < len(expr) && expr[next] == '(' {
					inLabelList, i = true, next+1
				}
			case keyword[lower], next < len(expr) && expr[next] == '(':
			default:
				add(&metrics, word)
			}
		default:
			i++
		}
	}
	return metrics, labels
}

// dashboard is the part of Grafana's dashboard JSON the checks read.
type dashboard struct {
	UID   string `json:"uid"`
	Title string `json:"title"`
	Time  struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string `json:"name"`
			BuiltIn    int    `json:"builtIn"`
			Datasource any    `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

// variable is a dashboard (template) variable.
type variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Datasource any    `json:"datasource"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource any      `json:"datasource"`
	TimeFrom   string   `json:"timeFrom"`  // a relative time that replaces the dashboard's range
	TimeShift  string   `json:"timeShift"` // moves the range back
	Panels     []panel  `json:"panels"`    // a collapsed row holds its panels
	Targets    []target `json:"targets"`
}

// target is one query of a panel: expr and legendFormat for Prometheus; the Infinity query
// model (infinityTarget, reports_test.go) for the query service's reports.
type target struct {
	RefID        string `json:"refId"`
	Datasource   any    `json:"datasource"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	infinityTarget
}

func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// datasourceRef reads a panel's, target's, variable's or annotation's datasource: absent means
// the default one; an object names a uid and, optionally, the type. A name string or a
// ${DS_...} input only works through the import UI.
func datasourceRef(v any) (uid, typ string, err error) {
	switch ds := v.(type) {
	case nil:
		return "", "", nil
	case map[string]any:
		uid, _ = ds["uid"].(string)
		typ, _ = ds["type"].(string)
		if uid == "" {
			return "", "", fmt.Errorf("datasource %v has no uid", ds)
		}
		return uid, typ, nil
	default:
		return "", "", fmt.Errorf("datasource %v: use {\"type\": ..., \"uid\": ...} with a provisioned uid", ds)
	}
}

// provisionedDatasource is one entry of datasources.yml.
type provisionedDatasource struct {
	Name           string            `yaml:"name"`
	UID            string            `yaml:"uid"`
	Type           string            `yaml:"type"`
	URL            string            `yaml:"url"`
	IsDefault      bool              `yaml:"isDefault"`
	BasicAuth      bool              `yaml:"basicAuth"`
	JSONData       map[string]any    `yaml:"jsonData"`
	SecureJSONData map[string]string `yaml:"secureJsonData"`
}

func loadDatasources(t *testing.T) []provisionedDatasource {
	t.Helper()
	var ds struct {
		Datasources []provisionedDatasource `yaml:"datasources"`
	}
	readYAML(t, datasourcesPath, &ds)
	return ds.Datasources
}

// dashboardFiles lists every dashboard JSON under grafanaDir: the provider loads them all.
func dashboardFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(grafanaDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboard JSON under %s", grafanaDir)
	}
	return files
}

// compose is the part of docker-compose.yml the checks read. YAML merge keys (<<) are resolved
// by the decoder, as Compose does.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string            `yaml:"image"`
	Hostname    string            `yaml:"hostname"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []any             `yaml:"ports"`
	Volumes     []any             `yaml:"volumes"`
	DependsOn   any               `yaml:"depends_on"`
	Restart     string            `yaml:"restart"`
	User        string            `yaml:"user"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	return loadComposeFile(t, composePath)
}

func loadComposeFile(t *testing.T, path string) compose {
	t.Helper()
	var c compose
	readYAML(t, path, &c)
	if len(c.Services) == 0 {
		t.Fatalf("%s: no services", path)
	}
	return c
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func buildContext(b any) string {
	switch v := b.(type) {
	case string:
		return v
	case map[string]any:
		s, _ := v["context"].(string)
		return s
	}
	return ""
}

// dependsOn returns each dependency with its condition (the short list form means started).
func dependsOn(s service) map[string]string {
	out := map[string]string{}
	switch v := s.DependsOn.(type) {
	case []any:
		for _, d := range v {
			out[fmt.Sprint(d)] = "service_started"
		}
	case map[string]any:
		for name, d := range v {
			cond := "service_started"
			if m, ok := d.(map[string]any); ok {
				if c, ok := m["condition"].(string); ok {
					cond = c
				}
			}
			out[name] = cond
		}
	}
	return out
}

// hostIP returns the host address a published port binds, "" when it binds every interface.
func hostIP(p any) string {
	switch v := p.(type) {
	case map[string]any:
		s, _ := v["host_ip"].(string)
		return s
	default:
		spec, _, _ := strings.Cut(fmt.Sprint(v), "/")
		if parts := strings.Split(spec, ":"); len(parts) == 3 {
			return parts[0]
		}
		return ""
	}
}

// hostPort returns the host side of a published port, "" when Docker picks it.
func hostPort(p any) string {
	switch v := p.(type) {
	case map[string]any:
		if hp, ok := v["published"]; ok {
			return fmt.Sprint(hp)
		}
		return ""
	default:
		spec, _, _ := strings.Cut(fmt.Sprint(v), "/")
		if parts := strings.Split(spec, ":"); len(parts) >= 2 {
			return parts[len(parts)-2]
		}
		return ""
	}
}

// containerPorts returns the container side of each published port.
func containerPorts(s service) []string {
	var out []string
	for _, p := range s.Ports {
		switch v := p.(type) {
		case map[string]any:
			out = append(out, fmt.Sprint(v["target"]))
		default:
			spec, _, _ := strings.Cut(fmt.Sprint(v), "/")
			parts := strings.Split(spec, ":")
			out = append(out, parts[len(parts)-1])
		}
	}
	return out
}

// mount returns a volume entry's source (a named volume or a host path) and container path.
func mount(v any) (source, target string) {
	switch m := v.(type) {
	case map[string]any:
		source, _ = m["source"].(string)
		target, _ = m["target"].(string)
	default:
		parts := strings.Split(fmt.Sprint(m), ":")
		if len(parts) == 1 {
			return "", parts[0] // anonymous volume
		}
		source, target = parts[0], parts[1]
	}
	return source, target
}

func isBindSource(s string) bool {
	return strings.HasPrefix(s, ".") || strings.HasPrefix(s, "/") || strings.HasPrefix(s, "~")
}

// volumeAt returns the named volume a service mounts at or above path p, and p's path inside
// the volume, and whether the mount is read-only.
func volumeAt(s service, p string) (volume, rel string, readOnly bool) {
	for _, v := range s.Volumes {
		src, target := mount(v)
		target = strings.TrimSuffix(target, "/")
		if !isBindSource(src) && src != "" && strings.HasPrefix(p, target+"/") {
			return src, strings.TrimPrefix(p, target+"/"), mountReadOnly(v)
		}
	}
	return "", "", false
}

// mountReadOnly reports whether a volume entry mounts read-only.
func mountReadOnly(v any) bool {
	switch m := v.(type) {
	case map[string]any:
		ro, _ := m["read_only"].(bool)
		return ro
	default:
		parts := strings.Split(fmt.Sprint(m), ":")
		return len(parts) == 3 && slices.Contains(strings.Split(parts[2], ","), "ro")
	}
}

// checkTokenFile checks that path, which the grafana service reads its query token from, is the
// file the token one-shot writes (--token-file), in a named volume both mount, read-only in
// Grafana.
func checkTokenFile(t *testing.T, c compose, grafana service, path string) {
	t.Helper()
	gv, grel, ro := volumeAt(grafana, path)
	if gv == "" {
		t.Errorf("grafana reads %s, which is in no named volume it mounts", path)
		return
	}
	if !ro {
		t.Errorf("grafana mounts volume %q, which holds its token, read-write; mount it :ro", gv)
	}
	oneShot := c.Services[tokenService]
	written := flagValue(oneShot.Command, "--token-file")
	tv, trel, _ := volumeAt(oneShot, written)
	if tv != gv || trel != grel {
		t.Errorf("grafana reads %s (volume %q, %q); %s writes %q (volume %q, %q)", path, gv, grel, tokenService, written, tv, trel)
	}
}

// checkMountedAs checks that a path the container reads is a bind mount of want, a path
// relative to this package.
func checkMountedAs(t *testing.T, s service, inContainer, want string) {
	t.Helper()
	best, host := "", ""
	for _, v := range s.Volumes {
		src, target := mount(v)
		if !isBindSource(src) {
			continue
		}
		if (inContainer == target || strings.HasPrefix(inContainer, target+"/")) && len(target) > len(best) {
			best = target
			host = filepath.Join(filepath.Dir(composePath), src, strings.TrimPrefix(inContainer, target))
		}
	}
	if best == "" {
		t.Errorf("%s is not bind-mounted from the checkout (want %s)", inContainer, want)
		return
	}
	got, err1 := filepath.Abs(host)
	exp, err2 := filepath.Abs(want)
	if err1 != nil || err2 != nil || got != exp {
		t.Errorf("%s comes from %s, want %s", inContainer, host, want)
	}
	if _, err := os.Stat(host); err != nil {
		t.Errorf("%s: %v", inContainer, err)
	}
}

// interpolate renders a service's environment as Compose would with no variables set on the
// host: ${VAR:-default} and ${VAR-default} give the default, $$ is a dollar. A bare ${VAR} or
// $VAR is an error, because the stack must come up without a .env file.
func interpolate(env map[string]string) ([]string, error) {
	withDefault := regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}`)
	// A secret Compose requires (${VAR:?...}, written by 'shukei keys compose'): a key's worth of hex.
	required := regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}`)
	var out []string
	for _, k := range sortedKeys(env) {
		v := strings.ReplaceAll(env[k], "$$", "\x00")
		v = withDefault.ReplaceAllString(v, "$1")
		v = required.ReplaceAllString(v, strings.Repeat("5a", 32))
		if strings.Contains(v, "$") {
			return nil, fmt.Errorf("%s=%s: a variable without a default", k, env[k])
		}
		out = append(out, k+"="+strings.ReplaceAll(v, "\x00", "$"))
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// requireTool returns the path of a command the test needs. A missing tool ends the test by
// servicetest.Unavailable's rule: it fails when CI or SHUKEI_TEST_REQUIRE_SERVICES is set (a
// check that did not run proves nothing) and skips only on a developer's bare 'go test'.
// scripts/services.sh up installs both tools.
func requireTool(t *testing.T, name, debPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		servicetest.Unavailable(t, name, fmt.Errorf("%w: apt-get install -y --no-install-recommends %s", err, debPackage))
	}
	return path
}

// runTool runs a command and fails the test, with its output, when it exits non-zero.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// flagValue returns the value of a --flag value or --flag=value argument, "" when absent.
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// composeGrant is the principal the token one-shot registers: its --id, --kind and --purposes.
func composeGrant(t *testing.T, c compose) principal.Principal {
	t.Helper()
	s, ok := c.Services[tokenService]
	if !ok {
		t.Fatalf("no service %q in %s", tokenService, composePath)
	}
	p := principal.Principal{ID: flagValue(s.Command, "--id"), Kind: flagValue(s.Command, "--kind")}
	for _, x := range strings.Split(flagValue(s.Command, "--purposes"), ",") {
		if x = strings.TrimSpace(x); x != "" {
			p.Purposes = append(p.Purposes, x)
		}
	}
	if p.ID == "" || p.Kind == "" || len(p.Purposes) == 0 {
		t.Fatalf("%s: command %q lacks --id, --kind or --purposes", tokenService, s.Command)
	}
	return p
}

// checkReportsDatasource checks the Infinity data source the report panels use: the query
// service's public listener, the grafana principal's token as a bearer token read from its
// file, and that token sent to the query service only.
func checkReportsDatasource(t *testing.T, ds []provisionedDatasource, c compose) {
	t.Helper()
	var d *provisionedDatasource
	for i := range ds {
		if ds[i].UID == reportsUID {
			d = &ds[i]
		}
	}
	if d == nil {
		t.Errorf("no data source with uid %q (the query service's reports)", reportsUID)
		return
	}
	if d.Type != infinityType {
		t.Errorf("%s: type %q, want %q", d.UID, d.Type, infinityType)
	}
	if d.URL != queryBase {
		t.Errorf("%s: url %q, want %q", d.UID, d.URL, queryBase)
	}
	// The query service's public listener is on the port the URL names.
	if q, ok := c.Services["query"]; !ok || q.Environment["SHUKEI_QUERY_LISTEN"] != ":"+strings.TrimPrefix(queryBase, "http://query:") {
		t.Errorf("query service listens on %q, the data source calls %s", q.Environment["SHUKEI_QUERY_LISTEN"], queryBase)
	}
	if m, _ := d.JSONData["auth_method"].(string); m != "bearerToken" {
		t.Errorf("%s: jsonData.auth_method %q, want bearerToken", d.UID, m)
	}
	hosts, _ := d.JSONData["allowedHosts"].([]any)
	if len(hosts) != 1 || hosts[0] != queryBase+"/" {
		t.Errorf("%s: jsonData.allowedHosts %v, want [%s/] (Infinity compares prefixes: the token goes to the query service only)", d.UID, hosts, queryBase)
	}
	if h, _ := d.JSONData["unsecuredQueryHandling"].(string); h != "deny" {
		t.Errorf("%s: jsonData.unsecuredQueryHandling %q, want deny (a query may not send an Authorization header of its own)", d.UID, h)
	}
	if tok := d.SecureJSONData["bearerToken"]; !regexp.MustCompile(`^\$__file\{/[^}]+\}$`).MatchString(tok) {
		t.Errorf("%s: secureJsonData.bearerToken %q, want $__file{<the token file>}", d.UID, tok)
	}
	for k := range d.SecureJSONData {
		if k != "bearerToken" {
			t.Errorf("%s: secureJsonData.%s: the bearer token is the one credential", d.UID, k)
		}
	}
	for k := range d.JSONData {
		if strings.HasPrefix(k, "httpHeaderName") || strings.HasPrefix(k, "secureQueryName") || k == "oauthPassThru" || k == "tlsSkipVerify" {
			t.Errorf("%s: jsonData.%s: not needed to read the reports", d.UID, k)
		}
	}
	if d.BasicAuth {
		t.Errorf("%s: basicAuth: the bearer token is the one credential", d.UID)
	}
}

// checkPlugins checks GF_INSTALL_PLUGINS: exactly the plugins of the provisioned data sources
// that Grafana does not ship, at the pinned versions, and no ClickHouse plugin.
func checkPlugins(t *testing.T, g service, ds []provisionedDatasource) {
	t.Helper()
	builtIn := map[string]bool{"prometheus": true}
	installed := map[string]string{}
	for _, p := range strings.Split(g.Environment["GF_INSTALL_PLUGINS"], ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		id, version, _ := strings.Cut(p, " ")
		installed[id] = strings.TrimSpace(version)
	}
	want := map[string]string{infinityType: infinityVersion}
	for _, d := range ds {
		if !builtIn[d.Type] {
			if _, ok := want[d.Type]; !ok {
				t.Errorf("data source %s of type %s: pin its plugin version here and in GF_INSTALL_PLUGINS", d.UID, d.Type)
			}
		}
	}
	for id, v := range want {
		if installed[id] != v {
			t.Errorf("GF_INSTALL_PLUGINS installs %s %q, want %q (a version that supports the pinned Grafana)", id, installed[id], v)
		}
	}
	for id := range installed {
		if _, ok := want[id]; !ok {
			t.Errorf("GF_INSTALL_PLUGINS installs %s, which no provisioned data source uses", id)
		}
	}
}

// (e) The cluster stack (docker-compose.cluster.yml) is the cluster Shukei's cluster mode needs
// (docs/CLUSTER.md): four ClickHouse servers, one for each (shard, replica) of two shards of two
// replicas, which cluster.xml's remote_servers names; three ClickHouse Keeper nodes in one Raft
// group, which every server uses; three KRaft brokers, each broker and controller, replicating
// every topic three times; and every Shukei service on all of them, with migrate writing the
// roles' users into each server's users.d.
func TestComposeCluster(t *testing.T) {
	c := loadComposeFile(t, clusterComposePath)
	dir := filepath.Dir(clusterComposePath)

	// The Shukei services' settings, as the binary reads them; clickhouse.cluster names the
	// remote_servers cluster.
	shukei := map[string]config.Config{}
	for _, name := range servicesOfImage(c, strings.Split(roleImage, ":")[0]) {
		shukei[name] = roleConfig(t, c.Services[name])
	}
	if len(shukei) == 0 {
		t.Fatal("no Shukei service")
	}
	clusterName := shukei["migrate"].ClickHouse.Cluster

	t.Run("images are docker-compose.yml's", func(t *testing.T) {
		single := loadCompose(t)
		tags := map[string]string{} // repository -> tag in docker-compose.yml
		for _, s := range single.Services {
			if repo, tag, ok := strings.Cut(s.Image, ":"); ok {
				tags[repo] = tag
			}
		}
		// Keeper has no service in docker-compose.yml: it is the servers' release.
		tags[clickhouseKeeperImage] = tags[clickhouseServerImage]
		for _, name := range sortedKeys(c.Services) {
			repo, tag, _ := strings.Cut(c.Services[name].Image, ":")
			if want, ok := tags[repo]; !ok {
				t.Errorf("%s: image %s, which docker-compose.yml does not run", name, c.Services[name].Image)
			} else if tag != want {
				t.Errorf("%s: image %s, want tag %q (docker-compose.yml's)", name, c.Services[name].Image, want)
			}
		}
	})

	// Each ClickHouse server's config.d files from the checkout: its macros and the cluster.
	servers := servicesOfImage(c, clickhouseServerImage)
	type node struct {
		shard, replica string
		cluster        string // the config.d file that holds remote_servers
		conf           xmlNode
	}
	nodes := map[string]node{}
	t.Run("four ClickHouse servers, one for each shard and replica", func(t *testing.T) {
		if len(servers) != 4 {
			t.Fatalf("ClickHouse servers %q, want 4 (two shards of two replicas)", servers)
		}
		usersVolumes := map[string]string{}
		for _, name := range servers {
			s := c.Services[name]
			if s.Hostname != name {
				t.Errorf("%s: hostname %q, want %q: the name remote_servers gives it and replicas fetch parts from", name, s.Hostname, name)
			}
			n := node{}
			var macros []string
			for _, v := range s.Volumes {
				src, target := mount(v)
				if !isBindSource(src) || !strings.HasPrefix(target, "/etc/clickhouse-server/") {
					continue
				}
				if path.Dir(target) != "/etc/clickhouse-server/config.d" || path.Ext(target) != ".xml" {
					t.Errorf("%s: %s is mounted at %s; the cluster's files go into config.d, as *.xml", name, src, target)
					continue
				}
				if !mountReadOnly(v) {
					t.Errorf("%s: %s is mounted read-write; mount it :ro", name, src)
				}
				x := readXML(t, filepath.Join(dir, src))
				if m := x.all("macros"); len(m) > 0 {
					macros = append(macros, src)
					n.shard, n.replica = m[0].get("shard"), m[0].get("replica")
				}
				if len(x.all("remote_servers")) > 0 {
					if n.cluster != "" {
						t.Errorf("%s: remote_servers in %s and in %s", name, n.cluster, src)
					}
					n.cluster, n.conf = src, x
				}
			}
			if len(macros) != 1 {
				t.Errorf("%s: macros in %q, want one file of its own", name, macros)
			}
			if n.cluster == "" {
				t.Errorf("%s: no config.d file defines remote_servers", name)
			}
			nodes[name] = n
			vol := volumeMountedAt(s, "/etc/clickhouse-server/users.d")
			if vol == "" {
				t.Errorf("%s: users.d is no named volume: migrate cannot write the roles' users into it", name)
			} else if other, dup := usersVolumes[vol]; dup {
				t.Errorf("%s and %s share the users.d volume %q", other, name, vol)
			}
			usersVolumes[vol] = name
		}
		// Two shards of two replicas: each (shard, replica) once.
		seen := map[[2]string]string{}
		shards, replicas := map[string]bool{}, map[string]bool{}
		for _, name := range servers {
			n := nodes[name]
			key := [2]string{n.shard, n.replica}
			if n.shard == "" || n.replica == "" {
				t.Errorf("%s: macros shard %q, replica %q: both must be set", name, n.shard, n.replica)
			} else if other, dup := seen[key]; dup {
				t.Errorf("%s and %s are both shard %s, replica %s", other, name, n.shard, n.replica)
			}
			seen[key] = name
			shards[n.shard], replicas[n.replica] = true, true
		}
		if len(shards) != 2 || len(replicas) != 2 || len(seen) != 4 {
			t.Errorf("macros %v: want every (shard, replica) of two shards and two replicas", seen)
		}
		// One cluster file, the same on every node.
		for _, name := range servers {
			if nodes[name].cluster != nodes[servers[0]].cluster {
				t.Errorf("%s reads the cluster from %s, %s from %s: one file for every node", name, nodes[name].cluster, servers[0], nodes[servers[0]].cluster)
			}
		}
	})

	keepers := servicesOfImage(c, clickhouseKeeperImage)
	t.Run("remote_servers names every server, shard by shard", func(t *testing.T) {
		if len(servers) == 0 || nodes[servers[0]].cluster == "" {
			t.Fatal("no cluster file (see the servers' check)")
		}
		n := nodes[servers[0]]
		if clusterName == "" {
			t.Fatal("migrate: clickhouse.cluster is not set")
		}
		cl := n.conf.all("remote_servers", clusterName)
		if len(cl) != 1 {
			t.Fatalf("%s: remote_servers has no cluster %q (clickhouse.cluster)", n.cluster, clusterName)
		}
		named := map[string]int{}
		shardOf := map[string]string{} // macro shard -> remote_servers shard it is in
		for i, sh := range cl[0].all("shard") {
			if got := sh.get("internal_replication"); got != "true" {
				t.Errorf("shard %d: internal_replication %q, want true (the replicated tables copy the rows)", i+1, got)
			}
			var macroShards []string
			for _, r := range sh.all("replica") {
				host, port := r.get("host"), r.get("port")
				named[host]++
				if !slices.Contains(servers, host) {
					t.Errorf("shard %d: replica %s is no ClickHouse server of the stack", i+1, host)
					continue
				}
				if port != "9000" {
					t.Errorf("shard %d: replica %s on port %q, want 9000 (the native port in the container)", i+1, host, port)
				}
				macroShards = append(macroShards, nodes[host].shard)
			}
			slices.Sort(macroShards)
			if macroShards = slices.Compact(macroShards); len(macroShards) != 1 {
				t.Errorf("shard %d: its replicas have the macros shards %q, want one", i+1, macroShards)
				continue
			}
			if prev, dup := shardOf[macroShards[0]]; dup {
				t.Errorf("shards %s and %d both hold the nodes of macro shard %s", prev, i+1, macroShards[0])
			}
			shardOf[macroShards[0]] = fmt.Sprint(i + 1)
		}
		for _, name := range servers {
			if named[name] != 1 {
				t.Errorf("remote_servers cluster %s names %s %d times, want once", clusterName, name, named[name])
			}
		}
		if len(cl[0].all("shard")) != 2 {
			t.Errorf("remote_servers cluster %s has %d shards, want 2", clusterName, len(cl[0].all("shard")))
		}
		// No distributed DDL queue (the image's own config.xml declares one): 'shukei migrate'
		// runs each statement node by node, and the queue would run a user's DDL as the server.
		if d := n.conf.all("distributed_ddl"); len(d) != 1 || d[0].attr("remove") != "remove" || n.conf.get("distributed_ddl", "path") != "" {
			t.Error(`cluster.xml must remove the distributed DDL queue: <distributed_ddl remove="remove"/>`)
		}
		// The coordination service is the stack's keepers, on the port they serve.
		var zk []string
		for _, z := range n.conf.all("zookeeper", "node") {
			zk = append(zk, net.JoinHostPort(z.get("host"), z.get("port")))
		}
		var want []string
		for _, k := range keepers {
			want = append(want, net.JoinHostPort(k, "9181"))
		}
		if !sameSet(zk, want) {
			t.Errorf("zookeeper nodes %q, want the keepers %q", zk, want)
		}
	})

	t.Run("three ClickHouse Keeper nodes in one Raft group", func(t *testing.T) {
		if len(keepers) != 3 {
			t.Fatalf("keepers %q, want 3 (a majority survives one down)", keepers)
		}
		ids := map[string]string{}
		var raft []string
		for _, name := range keepers {
			s := c.Services[name]
			if s.Hostname != name {
				t.Errorf("%s: hostname %q, want %q (the Raft configuration's)", name, s.Hostname, name)
			}
			var conf xmlNode
			id := ""
			for _, v := range s.Volumes {
				src, target := mount(v)
				if !isBindSource(src) {
					continue
				}
				if !mountReadOnly(v) {
					t.Errorf("%s: %s is mounted read-write; mount it :ro", name, src)
				}
				x := readXML(t, filepath.Join(dir, src))
				switch {
				case target == "/etc/clickhouse-keeper/keeper_config.xml":
					conf = x
				case path.Dir(target) == "/etc/clickhouse-keeper/keeper_config.d":
					id = x.get("keeper_server", "server_id")
				default:
					t.Errorf("%s: %s is mounted at %s, which the keeper does not read", name, src, target)
				}
			}
			if port := conf.get("keeper_server", "tcp_port"); port != "9181" {
				t.Errorf("%s: keeper_server tcp_port %q, want 9181 (cluster.xml's)", name, port)
			}
			var r []string
			for _, srv := range conf.all("keeper_server", "raft_configuration", "server") {
				r = append(r, srv.get("id")+"@"+srv.get("hostname"))
			}
			slices.Sort(r)
			if raft == nil {
				raft = r
			} else if !slices.Equal(r, raft) {
				t.Errorf("%s: raft_configuration %q, another keeper's %q", name, r, raft)
			}
			if other, dup := ids[id]; id == "" {
				t.Errorf("%s: no server_id in keeper_config.d", name)
			} else if dup {
				t.Errorf("%s and %s are both server_id %s: each keeper needs its own", other, name, id)
			}
			ids[id] = name
		}
		var want []string
		for id, name := range ids {
			want = append(want, id+"@"+name)
		}
		slices.Sort(want)
		if !slices.Equal(raft, want) {
			t.Errorf("raft_configuration %q, want each keeper with its server_id: %q", raft, want)
		}
	})

	t.Run("three Kafka brokers, every topic on each", func(t *testing.T) {
		brokers := servicesOfImage(c, kafkaImage)
		if len(brokers) != 3 {
			t.Fatalf("brokers %q, want 3", brokers)
		}
		var voters, advertised []string
		for _, name := range brokers {
			e := c.Services[name].Environment
			id := e["KAFKA_NODE_ID"]
			controller := listenerPort(e["KAFKA_LISTENERS"], "CONTROLLER")
			voters = append(voters, id+"@"+name+":"+controller)
			// What it advertises to the other containers (the Shukei services among them).
			a := listenerAddr(e["KAFKA_ADVERTISED_LISTENERS"], e["KAFKA_INTER_BROKER_LISTENER_NAME"])
			if host, _, _ := net.SplitHostPort(a); host != name {
				t.Errorf("%s: advertises %q on %s, want its service name", name, a, e["KAFKA_INTER_BROKER_LISTENER_NAME"])
			}
			advertised = append(advertised, a)
			for k, want := range map[string]string{
				"KAFKA_PROCESS_ROLES":              "broker,controller",
				"KAFKA_DEFAULT_REPLICATION_FACTOR": "3",
				"KAFKA_MIN_INSYNC_REPLICAS":        "2",
				"CLUSTER_ID":                       c.Services[brokers[0]].Environment["CLUSTER_ID"],
				"KAFKA_CONTROLLER_QUORUM_VOTERS":   c.Services[brokers[0]].Environment["KAFKA_CONTROLLER_QUORUM_VOTERS"],
			} {
				if e[k] != want || want == "" {
					t.Errorf("%s: %s=%q, want %q", name, k, e[k], want)
				}
			}
		}
		if got := strings.Split(c.Services[brokers[0]].Environment["KAFKA_CONTROLLER_QUORUM_VOTERS"], ","); !sameSet(got, voters) {
			t.Errorf("KAFKA_CONTROLLER_QUORUM_VOTERS %q, want the three brokers' controllers %q (distinct node ids)", got, voters)
		}
		for _, name := range sortedKeys(shukei) {
			cfg := shukei[name]
			if !sameSet(cfg.Kafka.Brokers, advertised) {
				t.Errorf("%s: kafka.brokers %q, want every broker %q", name, cfg.Kafka.Brokers, advertised)
			}
			if cfg.Kafka.ReplicationFactor != 3 {
				t.Errorf("%s: kafka.replication_factor %d, want 3", name, cfg.Kafka.ReplicationFactor)
			}
		}
	})

	t.Run("every Shukei service knows the cluster and every node", func(t *testing.T) {
		var want []string
		for _, name := range servers {
			want = append(want, net.JoinHostPort(name, "9000"))
		}
		for _, name := range sortedKeys(shukei) {
			cfg := shukei[name]
			if cfg.ClickHouse.Cluster != clusterName {
				t.Errorf("%s: clickhouse.cluster %q, want %q", name, cfg.ClickHouse.Cluster, clusterName)
			}
			if !sameSet(cfg.ClickHouse.Addr, want) {
				t.Errorf("%s: clickhouse.addr %q, want every server %q", name, cfg.ClickHouse.Addr, want)
			}
			// One order everywhere: the roles connect to the same node (docs/CLUSTER.md, the
			// processor does not write per shard yet).
			if !slices.Equal(cfg.ClickHouse.Addr, shukei["migrate"].ClickHouse.Addr) {
				t.Errorf("%s: clickhouse.addr %q, migrate's %q: list the nodes in one order", name, cfg.ClickHouse.Addr, shukei["migrate"].ClickHouse.Addr)
			}
		}
	})

	t.Run("migrate writes the roles' users into every server's users.d", func(t *testing.T) {
		m := c.Services["migrate"]
		dirs := strings.Split(shukei["migrate"].ClickHouse.UsersDir, ":")
		var got, want []string
		for _, d := range dirs {
			v := volumeMountedAt(m, d)
			if v == "" {
				t.Errorf("clickhouse.users_dir %s is no named volume migrate mounts", d)
			}
			got = append(got, v)
		}
		for _, name := range servers {
			want = append(want, volumeMountedAt(c.Services[name], "/etc/clickhouse-server/users.d"))
		}
		if len(dirs) != len(servers) || !sameSet(got, want) {
			t.Errorf("clickhouse.users_dir %q holds the volumes %q, want each server's users.d once: %q", dirs, got, want)
		}
	})
}

// volumeMountedAt returns the named volume a service mounts exactly at p, "" when none.
func volumeMountedAt(s service, p string) string {
	for _, v := range s.Volumes {
		src, target := mount(v)
		if !isBindSource(src) && src != "" && strings.TrimSuffix(target, "/") == strings.TrimSuffix(p, "/") {
			return src
		}
	}
	return ""
}

// listenerAddr returns the host:port of the named listener in a Kafka listener list
// (NAME://host:port,...), "" when it is not there.
func listenerAddr(listeners, name string) string {
	for _, l := range strings.Split(listeners, ",") {
		if n, addr, ok := strings.Cut(strings.TrimSpace(l), "://"); ok && n == name {
			return addr
		}
	}
	return ""
}

func listenerPort(listeners, name string) string {
	_, port, _ := net.SplitHostPort(listenerAddr(listeners, name))
	return port
}

// xmlNode is any element of a ClickHouse configuration file, with its children.
type xmlNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []xmlNode  `xml:",any"`
}

// attr returns the value of the element's attribute name, "" when it has none.
func (n xmlNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// all returns the elements at the path of names below n.
func (n xmlNode) all(names ...string) []xmlNode {
	level := []xmlNode{n}
	for _, name := range names {
		var next []xmlNode
		for _, x := range level {
			for _, c := range x.Nodes {
				if c.XMLName.Local == name {
					next = append(next, c)
				}
			}
		}
		level = next
	}
	return level
}

// get returns the text of the first element at the path, "" when there is none.
func (n xmlNode) get(names ...string) string {
	if x := n.all(names...); len(x) > 0 {
		return strings.TrimSpace(x[0].Text)
	}
	return ""
}

// readXML reads a ClickHouse (or Keeper) configuration file, whose root is <clickhouse>.
func readXML(t *testing.T, path string) xmlNode {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var x xmlNode
	if err := xml.Unmarshal(b, &x); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if x.XMLName.Local != "clickhouse" {
		t.Fatalf("%s: root element <%s>, want <clickhouse>", path, x.XMLName.Local)
	}
	return x
}
