package attack

// Attack tests of promises 13-15 ("Ingest cannot be stopped, Kafka cannot be forged into a
// tenant, secrets stay secret"), written from docs/promises.md, the README, the command-line
// help and `shukei config` alone (brief: ABUSE.md). This file holds the helpers the abuse
// tests share and the attack on promise 15; abuse_ingest_test.go attacks promise 13 and
// abuse_forge_test.go promise 14.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shukei/shukei/internal/servicetest"
)

// ---- shared helpers ----

// abFeature is one valid feature_use event of tenant (schemas/testdata/valid/
// feature_use_record_create.json's shape) with a fresh event id and user, occurring at at.
func abFeature(tenant, feature string, at time.Time) (body []byte, eventID, user string) {
	eventID, user = uuid.NewString(), uuid.NewString()
	ev := map[string]any{
		"event_id":    eventID,
		"tenant_id":   tenant,
		"occurred_at": at.UTC().Format(time.RFC3339Nano),
		"schema":      "feature_use/v1",
		"source":      "web-sdk",
		"user":        user,
		"client":      map[string]any{"os": "windows", "os_version": "10.0.22631", "device_kind": "desktop"},
		"data":        map[string]any{"feature_id": feature, "count": 1, "records_registered": 0},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return b, eventID, user
}

// abBatch is n fresh feature_use events of tenant as NDJSON, with their event ids.
func abBatch(tenant string, n int) ([]byte, []string) {
	var buf bytes.Buffer
	var ids []string
	for range n {
		b, id, _ := abFeature(tenant, "app.record.create", time.Now().Add(-30*time.Second))
		buf.Write(b)
		buf.WriteByte('\n')
		ids = append(ids, id)
	}
	return buf.Bytes(), ids
}

// abAnswer is what the collector answered to one request.
type abAnswer struct {
	status     int
	retryAfter string
	body       []byte
	took       time.Duration
	err        error
	results    []abResult
}

type abResult struct {
	Index  int    `json:"index"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// abPost posts an NDJSON body to POST /v1/events with the token (none when token is "").
func abPost(client *http.Client, base, token string, body []byte) abAnswer {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	return abDo(client, req)
}

func abDo(client *http.Client, req *http.Request) abAnswer {
	began := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return abAnswer{err: err, took: time.Since(began)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	resp.Body.Close()
	a := abAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: b, took: time.Since(began), err: err}
	var reply struct {
		Results []abResult `json:"results"`
	}
	if json.Unmarshal(b, &reply) == nil {
		a.results = reply.Results
	}
	return a
}

// allAccepted says whether a 200 answer accepted each of n events.
func (a abAnswer) allAccepted(n int) bool {
	if a.status != http.StatusOK || len(a.results) != n {
		return false
	}
	for _, r := range a.results {
		if r.Status != "accepted" {
			return false
		}
	}
	return true
}

func (a abAnswer) String() string {
	if a.err != nil {
		return fmt.Sprintf("transport error after %s: %v", a.took.Round(time.Millisecond), a.err)
	}
	body := string(a.body)
	if len(body) > 200 {
		body = body[:200] + "…"
	}
	return fmt.Sprintf("HTTP %d after %s (Retry-After %q): %s", a.status, a.took.Round(time.Millisecond), a.retryAfter, strings.TrimSpace(body))
}

// abRetryAfter parses a Retry-After value (seconds or an HTTP date).
func abRetryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, n >= 0
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t)), true
	}
	return 0, false
}

// abRawStatus reads the status line of an HTTP/1.1 response from a raw connection.
func abRawStatus(r *bufio.Reader) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, fmt.Errorf("not a status line: %q", line)
	}
	return strconv.Atoi(f[1])
}

// abPercentile is the p-th percentile (0..100) of ds, nearest rank.
func abPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// abEventIDs reads the event_id of every message of the raw topic (the collector writes what
// it accepted there), with how often each occurs.
func (s *stack) abEventIDs() map[string]int {
	s.t.Helper()
	out := map[string]int{}
	for _, m := range s.readRaw() {
		var ev struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.Value, &ev) == nil {
			out[ev.EventID]++
		}
	}
	return out
}

// abRejectedEventIDs is the event_id of every refusal in the rejections table.
func (s *stack) abRejectedEventIDs() map[string][]string {
	s.t.Helper()
	rows, err := s.conn.Query(context.Background(), "SELECT event_id, reason FROM "+s.db+".rejections WHERE class != 'checkpoint'")
	if err != nil {
		s.t.Fatalf("read the rejections: %v", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var id, reason string
		if err := rows.Scan(&id, &reason); err != nil {
			s.t.Fatal(err)
		}
		out[id] = append(out[id], reason)
	}
	return out
}

// ---- promise 15: secrets are never printed ----

// TestAbuseSecretsNeverPrinted: 'shukei config' with every secret setting set (environment,
// flags, a YAML file; valid and invalid values, which make it list problems) prints none of
// their values, only that one is set; and a master key file that group or others may read is
// refused by every role that loads it, while 0600 works.
func TestAbuseSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	dir := t.TempDir()
	baseEnv := abCleanEnv()

	keyHex := randHex(32) // a valid master key: 64 hex digits
	password := "pw-" + randHex(12) + "-Zq"
	tokenHash := randHex(32)
	badKey := "not-a-key-" + randHex(10) // invalid: config must list the problem without the value

	// needles: every secret value, and long enough pieces of it that a partial print shows.
	needles := map[string]string{
		"master key":             keyHex,
		"master key (upper)":     strings.ToUpper(keyHex),
		"master key, first half": keyHex[:32],
		"master key, last half":  keyHex[32:],
		"clickhouse password":    password,
		"password, first part":   password[:12],
		"invalid master key":     badKey,
	}
	find := func(out string) []string {
		var hits []string
		low := strings.ToLower(out)
		for name, v := range needles {
			if strings.Contains(low, strings.ToLower(v)) {
				hits = append(hits, name)
			}
		}
		sort.Strings(hits)
		return hits
	}
	run := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	yamlGood := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(yamlGood, []byte(fmt.Sprintf("anonymizer:\n  master_key: %q\nclickhouse:\n  password: %q\ncollector:\n  ingest_tokens: [%q]\n", keyHex, password, "acme:"+tokenHash)), 0o600); err != nil {
		t.Fatal(err)
	}
	yamlBad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(yamlBad, []byte(fmt.Sprintf("anonymizer:\n  master_key: %q\nclickhouse:\n  password: %q\n", badKey, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "plain.key")
	if err := os.WriteFile(keyFile, []byte(keyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		env      []string
		args     []string
		wantFail bool // the configuration is invalid: config must exit non-zero (and still print no value)
		anyExit  bool // not promised either way
	}{
		{name: "environment", env: []string{"SHUKEI_ANONYMIZER_MASTER_KEY=" + keyHex, "SHUKEI_CLICKHOUSE_PASSWORD=" + password, "SHUKEI_COLLECTOR_INGEST_TOKENS=acme:" + tokenHash}},
		{name: "flags", args: []string{"--anonymizer.master_key=" + keyHex, "--clickhouse.password=" + password}},
		{name: "--config YAML file", args: []string{"--config", yamlGood}},
		{name: "SHUKEI_CONFIG YAML file", env: []string{"SHUKEI_CONFIG=" + yamlGood}},
		{name: "YAML file and environment both", env: []string{"SHUKEI_ANONYMIZER_MASTER_KEY=" + keyHex, "SHUKEI_CLICKHOUSE_PASSWORD=" + password}, args: []string{"--config", yamlGood}},
		{name: "key both inline and as a file (a conflict, if any, is listed without the value)", env: []string{"SHUKEI_ANONYMIZER_MASTER_KEY=" + keyHex, "SHUKEI_ANONYMIZER_MASTER_KEY_FILE=" + keyFile, "SHUKEI_CLICKHOUSE_PASSWORD=" + password}},
		// Whether config checks the key's form is not promised; either way the value stays unprinted.
		{name: "invalid master key in the environment", env: []string{"SHUKEI_ANONYMIZER_MASTER_KEY=" + badKey, "SHUKEI_CLICKHOUSE_PASSWORD=" + password}, anyExit: true},
		{name: "invalid master key in a YAML file", args: []string{"--config", yamlBad}, anyExit: true},
		{name: "secrets with another invalid setting", env: []string{"SHUKEI_ANONYMIZER_MASTER_KEY=" + keyHex, "SHUKEI_CLICKHOUSE_PASSWORD=" + password, "SHUKEI_COLLECTOR_MAX_IN_FLIGHT=-1"}, wantFail: true},
	}
	for _, c := range cases {
		out, err := run(append(append([]string(nil), baseEnv...), c.env...), append([]string{"config"}, c.args...)...)
		if hits := find(out); len(hits) > 0 {
			t.Errorf("promise 15: 'shukei config' (%s) printed %s (%d bytes of output)", c.name, strings.Join(hits, ", "), len(out))
		}
		switch {
		case c.anyExit:
		case c.wantFail && err == nil:
			t.Errorf("'shukei config' (%s) exited 0 with an invalid configuration", c.name)
		case !c.wantFail && err != nil:
			t.Errorf("'shukei config' (%s) failed: %v\n%s", c.name, err, abRedact(out, needles))
		}
		if !c.wantFail && !c.anyExit && err == nil {
			// "only that one is set": the password and key lines say so without the value.
			for _, setting := range []string{"clickhouse.password", "anonymizer.master_key "} {
				line := abLine(out, setting)
				if line == "" && setting == "anonymizer.master_key " && strings.Contains(c.name, "file") && !strings.Contains(c.name, "inline") {
					continue
				}
				if line == "" {
					t.Errorf("'shukei config' (%s) has no %s line at all", c.name, strings.TrimSpace(setting))
					continue
				}
				f := strings.Fields(line)
				if len(f) < 3 { // setting, value, variable: with the value empty, only two
					t.Errorf("promise 15 ('only that one is set'): 'shukei config' (%s) shows %s as unset although it is set: %q", c.name, strings.TrimSpace(setting), line)
				}
			}
			if strings.Contains(strings.ToLower(out), tokenHash) {
				t.Logf("note (%s): collector.ingest_tokens is printed with its SHA-256 token hashes; the setting is not a key or a password (config marks no secret on it), so this is not held against promise 15", c.name)
			}
		}
		t.Logf("shukei config (%s): exit %v, %d bytes, password line %q", c.name, err, len(out), abRedact(abLine(out, "clickhouse.password"), needles))
	}

	// The roles that load the master key, with a key file of each mode.
	// A migrated database (the purpose readers declared for the query role), a key file
	// written by 'keys init' (0600).
	usersDir := servicetest.UsersDir(t)
	s := newStackEnv(t, 2*time.Second, "SHUKEI_CLICKHOUSE_USERS_DIR="+usersDir)
	db := s.db
	t.Cleanup(func() { _ = os.Remove(filepath.Join(usersDir, db+"-readers.xml")) })
	keyPath := ""
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "SHUKEI_ANONYMIZER_MASTER_KEY_FILE="); ok {
			keyPath = v
		}
	}
	if st, err := os.Stat(keyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("'shukei keys init' wrote %s with mode %v (err %v), want 0600", keyPath, st.Mode().Perm(), err)
	}
	keyText, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	needles["stack master key"] = strings.TrimSpace(string(keyText))
	s.redact = func(x string) string { return abRedact(x, needles) }
	s.addTenant("sec-ok-"+randHex(3), "contracted")
	releases := servicetest.Topic(t, s.brokers, 1)
	aggAddr, queryAddr, queryOps := freeAddr(t), freeAddr(t), freeAddr(t)
	roleEnv := append(abAggregatorEnv(releases, aggAddr), "SHUKEI_QUERY_LISTEN="+queryAddr, "SHUKEI_QUERY_OPS_LISTEN="+queryOps,
		"SHUKEI_QUERY_READER_WAIT=20s")
	health := map[string]string{"processor": s.addrs["processor"], "aggregator": aggAddr, "query": queryOps, "collector": s.addrs["collector"]}

	// runRole runs one command; for a long-running role it returns "running" once its /healthz
	// answers 200 (then stops it), or what it printed once it exits.
	runRole := func(args []string) (running bool, exitErr error, out string) {
		o := s.addOutput("shukei " + strings.Join(args, " ") + " (key mode test)")
		cmd := exec.Command(s.bin, args...)
		cmd.Dir, cmd.Env = s.dir, append(append([]string(nil), s.env...), roleEnv...)
		cmd.Stdout, cmd.Stderr = o, o
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %v: %v", args, err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		client := &http.Client{Timeout: time.Second}
		deadline := time.Now().Add(25 * time.Second)
		for {
			select {
			case err := <-done:
				return false, err, o.String()
			default:
			}
			if addr := health[args[0]]; addr != "" {
				if resp, err := client.Get("http://" + addr + "/healthz"); err == nil {
					resp.Body.Close()
					if resp.StatusCode == 200 {
						_ = cmd.Process.Signal(syscall.SIGTERM)
						select {
						case <-done:
						case <-time.After(20 * time.Second):
							_ = cmd.Process.Kill()
							<-done
						}
						return true, nil, o.String()
					}
				}
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-done
				return true, nil, o.String()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	roles := [][]string{
		{"migrate"},
		{"tenants", "add", "--tenant", "", "--status", "contracted", "--edition", "standard", "--size-band", "s"},
		{"processor"},
		{"aggregator"},
		{"query"},
	}
	withTenant := func(r []string) []string {
		out := append([]string(nil), r...)
		for i := range out {
			if out[i] == "" {
				out[i] = "sec-t-" + randHex(4)
			}
		}
		return out
	}
	// 0600 works: every role loads the key and runs (or finishes).
	for _, r := range roles {
		r = withTenant(r)
		running, err, out := runRole(r)
		if !running && err != nil {
			t.Errorf("with the master key file at 0600, 'shukei %s' failed: %v\n%s", strings.Join(r, " "), err, abRedact(tail2(out, 15), needles))
		}
		if hits := find(out); len(hits) > 0 {
			t.Errorf("promise 15: 'shukei %s' printed %s", r[0], strings.Join(hits, ", "))
		}
	}
	target := filepath.Join(s.dir, "target.key")
	link := filepath.Join(s.dir, "link.key")
	type keyCase struct {
		name string
		mode os.FileMode
		path string
	}
	var kcs []keyCase
	for _, m := range []os.FileMode{0o640, 0o644, 0o604, 0o660, 0o666, 0o440} {
		kcs = append(kcs, keyCase{name: fmt.Sprintf("mode %04o", m), mode: m, path: keyPath})
	}
	kcs = append(kcs, keyCase{name: "a symlink (0777 itself) to a 0644 file", mode: 0o644, path: link})
	if err := os.WriteFile(target, keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, kc := range kcs {
		file := kc.path
		if file == link {
			file = target
		}
		if err := os.Chmod(file, kc.mode); err != nil {
			t.Fatal(err)
		}
		for _, r := range roles {
			r = withTenant(r)
			saved := s.env
			s.env = append(append([]string(nil), saved...), "SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+kc.path)
			running, err, out := runRole(r)
			s.env = saved
			what := fmt.Sprintf("'shukei %s' with the master key file at %s", r[0], kc.name)
			if r[0] == "tenants" {
				what = fmt.Sprintf("'shukei tenants add' with the master key file at %s", kc.name)
			}
			switch {
			case running:
				t.Errorf("promise 15: %s started and ran (its /healthz answered 200 or it ran 25 s): a key file group or others may read was not refused", what)
			case err == nil:
				t.Errorf("promise 15: %s exited 0: a key file group or others may read was not refused", what)
			case !abMentionsKeyFile(out, kc.path):
				t.Errorf("%s exited non-zero (%v) but its message does not say the key file's mode is the problem:\n%s", what, err, abRedact(tail2(out, 8), needles))
			default:
				t.Logf("%s: refused (%v): %s", what, err, abRedact(tail2(out, 1), needles))
			}
			if hits := find(out); len(hits) > 0 {
				t.Errorf("promise 15: %s printed %s", what, strings.Join(hits, ", "))
			}
		}
		if err := os.Chmod(file, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The ClickHouse password never shows in a role's output either, even when it is wrong and
	// the connection fails (beyond the sentence, which names 'shukei config'; reported apart).
	saved := s.env
	s.env = append(append([]string(nil), saved...), "SHUKEI_CLICKHOUSE_PASSWORD="+password, "SHUKEI_LOG_LEVEL=debug")
	_, err, out := runRole([]string{"migrate"})
	s.env = saved
	if hits := find(out); len(hits) > 0 {
		t.Errorf("secrets are never printed: 'shukei migrate' with a wrong ClickHouse password (exit %v) printed %s", err, strings.Join(hits, ", "))
	}
	// Every role's output of the whole test, scanned once more.
	s.mu.Lock()
	for _, o := range s.outputs {
		if hits := find(o.out.String()); len(hits) > 0 {
			t.Errorf("promise 15: %s printed %s", o.name, strings.Join(hits, ", "))
		}
	}
	s.mu.Unlock()
}

// abMentionsKeyFile says whether a refusal's message points at the key file's permissions.
func abMentionsKeyFile(out, path string) bool {
	low := strings.ToLower(out)
	for _, w := range []string{"mode", "permission", "readable", "0600", "group", "others", "chmod"} {
		if strings.Contains(low, w) {
			return true
		}
	}
	return strings.Contains(out, path)
}

// abLine is the first line of out that starts with setting.
func abLine(out, setting string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, setting) {
			return l
		}
	}
	return ""
}

// abRedact replaces every needle in s (case-insensitively) before s is shown.
func abRedact(s string, needles map[string]string) string {
	for name, v := range needles {
		if v == "" {
			continue
		}
		low := strings.ToLower(s)
		lv := strings.ToLower(v)
		for {
			i := strings.Index(low, lv)
			if i < 0 {
				break
			}
			s = s[:i] + "[" + name + "]" + s[i+len(v):]
			low = strings.ToLower(s)
		}
	}
	return s
}

func tail2(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// abCleanEnv is the process environment without any SHUKEI_ setting (nothing from outside
// decides what the binary does), with SHUKEI_TEST_ ones kept.
func abCleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SHUKEI_") && !strings.HasPrefix(k, "SHUKEI_TEST_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// abAggregatorEnv is what an aggregator subprocess gets: base windows released
// (servicetest.AggregatorEnv), its own release topic, listen address and group.
func abAggregatorEnv(releases, listen string) []string {
	return append(servicetest.AggregatorEnv(),
		"SHUKEI_KAFKA_RELEASE_TOPIC="+releases, "SHUKEI_AGGREGATOR_LISTEN="+listen,
		"SHUKEI_AGGREGATOR_GROUP_ID=atk.agg."+randHex(4), "SHUKEI_AGGREGATOR_RELEASE_INTERVAL=250ms",
		"SHUKEI_AGGREGATOR_BUDGET_EPSILON=100000", "SHUKEI_AGGREGATOR_BUDGET_DELTA=0.5")
}

// abDial opens a raw TCP connection to addr.
func abDial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}
