package attack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/pipeline/topic"
)

// The binary is built once per run of the package (every test uses the same one).
var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds ./cmd/shukei (the code as it is in the working tree) once.
// SHUKEI_TEST_ATTACK_BIN names a binary to use instead (to attack a given build).
func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("SHUKEI_TEST_ATTACK_BIN"); b != "" {
		t.Logf("attacking the prebuilt binary %s (SHUKEI_TEST_ATTACK_BIN)", b)
		return b
	}
	root := servicetest.ModuleRoot(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shukei-attack-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		bin := filepath.Join(dir, "shukei")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/shukei")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Sprintf("go build ./cmd/shukei: %v\n%s", err, out)
			return
		}
		buildBin = bin
	})
	if buildBin == "" {
		t.Fatalf("the shukei binary does not build, nothing can be attacked: %s", buildErr)
	}
	return buildBin
}

// randHex is n random bytes as hex.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randDigits is n random decimal digits, the first one not 0.
func randDigits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	if b[0] == '0' {
		b[0] = '7'
	}
	return string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// output is what one CLI run or one role instance printed (stdout and stderr).
type output struct {
	name string
	out  *servicetest.Output
}

// proc is one running role.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *servicetest.Output
	done chan struct{}
	err  error
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stack is one test's Shukei: its ClickHouse database, its raw and DLQ topics, a master key,
// the binary, and the roles it runs, with everything each of them printed.
type stack struct {
	t        *testing.T
	conn     driver.Conn
	db       string
	brokers  []string
	raw, dlq string
	rawParts int
	bin      string
	dir      string
	env      []string
	refresh  time.Duration
	addrs    map[string]string

	mu      sync.Mutex
	outputs []*output
	procs   []*proc
	redact  func(string) string // set by the test once it knows what must not be printed
}

const (
	rawPartitions = 3
	dlqPartitions = 2
)

// newStack makes the test's database, topics and master key, migrates, and prepares the
// environment every role and CLI run gets. refresh is the registry refresh interval.
//
// The roles connect as their own ClickHouse users (promise 16), which migrate declares in the
// server's users.d: every stack has it.
func newStack(t *testing.T, refresh time.Duration) *stack {
	t.Helper()
	usersDir := servicetest.UsersDir(t)
	s := newStackEnv(t, refresh, "SHUKEI_CLICKHOUSE_USERS_DIR="+usersDir)
	db := s.db
	t.Cleanup(func() { _ = os.Remove(filepath.Join(usersDir, db+"-users.xml")) })
	return s
}

// newStackEnv is newStack with extra SHUKEI_* settings every role and CLI run gets (set before
// the first migrate, e.g. the users.d directory the readers are declared in).
func newStackEnv(t *testing.T, refresh time.Duration, extraEnv ...string) *stack {
	t.Helper()
	conn, cfg := servicetest.ClickHouse(t)
	servicetest.Kafka(t)
	brokers := cfg.Kafka.Brokers
	s := &stack{
		t: t, conn: conn, db: cfg.ClickHouse.Database, brokers: brokers,
		raw:      servicetest.Topic(t, brokers, rawPartitions),
		dlq:      servicetest.Topic(t, brokers, dlqPartitions),
		rawParts: rawPartitions,
		bin:      binary(t),
		dir:      t.TempDir(), // no ./shukei.yaml to pick up
		refresh:  refresh,
		addrs:    map[string]string{"collector": freeAddr(t), "processor": freeAddr(t)},
		redact:   func(s string) string { return s },
	}
	keyFile := filepath.Join(s.dir, "master.key")
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SHUKEI_") && !strings.HasPrefix(k, "SHUKEI_TEST_") {
			continue // nothing from outside decides what the roles do
		}
		env = append(env, kv)
	}
	env = append(env,
		"SHUKEI_CLICKHOUSE_ADDR="+strings.Join(cfg.ClickHouse.Addr, ","),
		"SHUKEI_CLICKHOUSE_DATABASE="+s.db,
		"SHUKEI_CLICKHOUSE_USERNAME="+cfg.ClickHouse.Username,
		"SHUKEI_KAFKA_BROKERS="+strings.Join(brokers, ","),
		"SHUKEI_KAFKA_RAW_TOPIC="+s.raw, "SHUKEI_KAFKA_DLQ_TOPIC="+s.dlq,
		"SHUKEI_KAFKA_RAW_PARTITIONS="+strconv.Itoa(rawPartitions), "SHUKEI_KAFKA_DLQ_PARTITIONS="+strconv.Itoa(dlqPartitions),
		"SHUKEI_PROCESSOR_GROUP_ID="+servicetest.Name(t, "atk."),
		"SHUKEI_PROCESSOR_BATCH_TIMEOUT=200ms",
		// The one registry refresh setting: 'shukei tenants --help' says running processors
		// and collectors see a change within registry.refresh.
		"SHUKEI_REGISTRY_REFRESH="+refresh.String(),
		"SHUKEI_ANONYMIZER_MASTER_KEY_FILE="+keyFile,
		"SHUKEI_COLLECTOR_LISTEN="+s.addrs["collector"], "SHUKEI_PROCESSOR_LISTEN="+s.addrs["processor"],
		"SHUKEI_COLLECTOR_OPS_LISTEN=127.0.0.1:0",
		// The most talkative level: the promise excepts no log level.
		"SHUKEI_LOG_LEVEL=debug", "SHUKEI_LOG_FORMAT=text",
	)
	if cfg.ClickHouse.Password != "" {
		env = append(env, "SHUKEI_CLICKHOUSE_PASSWORD="+cfg.ClickHouse.Password)
	}
	s.env = append(env, extraEnv...)
	t.Cleanup(s.cleanup)
	s.cli("keys", "init", "--file", keyFile)
	s.cli("migrate")
	return s
}

func (s *stack) addOutput(name string) *servicetest.Output {
	o := &servicetest.Output{}
	s.mu.Lock()
	s.outputs = append(s.outputs, &output{name: name, out: o})
	s.mu.Unlock()
	return o
}

// cli runs the binary with args and returns what it printed; a failure ends the test.
func (s *stack) cli(args ...string) string {
	s.t.Helper()
	out, err := s.tryCLI(args...)
	if err != nil {
		s.t.Fatalf("shukei %s: %v\n%s", strings.Join(args, " "), err, s.redact(out))
	}
	return out
}

func (s *stack) tryCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := s.addOutput("shukei " + strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	cmd.Stdout, cmd.Stderr = o, o
	err := cmd.Run()
	return o.String(), err
}

var tokenLine = regexp.MustCompile(`(?m)token[^:\n]*:\s*(\S+)\s*$`)

// addTenant registers a tenant with 'shukei tenants add' and returns its ingest token ("" for
// a terminated tenant, which may get none).
func (s *stack) addTenant(id, status string, extra ...string) string {
	s.t.Helper()
	args := append([]string{"tenants", "add", "--tenant", id, "--status", status, "--edition", "standard", "--size-band", "s"}, extra...)
	out := s.cli(args...)
	m := tokenLine.FindStringSubmatch(out)
	switch {
	case m != nil && strings.HasPrefix(m[1], "shk_"):
		return m[1]
	case status == "terminated":
		return ""
	}
	s.t.Fatalf("shukei tenants add printed no ingest token line:\n%s", out)
	return ""
}

// start starts a role (with extra environment, if any) and waits for its /healthz.
func (s *stack) start(name string, extraEnv ...string) *proc {
	s.t.Helper()
	label := name
	if len(extraEnv) > 0 {
		label += " (" + strings.Join(extraEnv, " ") + ")"
	}
	p := &proc{name: name, out: s.addOutput(label), done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, name)
	p.cmd.Dir, p.cmd.Env = s.dir, append(append([]string(nil), s.env...), extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", name, err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + s.addrs[name] + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if !p.running() {
			s.t.Fatalf("%s exited during start-up (%v):\n%s", name, p.err, s.redact(tail(p.out, 40)))
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: /healthz on %s does not answer 200 after 60s:\n%s", name, s.addrs[name], s.redact(tail(p.out, 40)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop SIGTERMs a role and waits up to 30 s for it to exit (then kills it).
func (s *stack) stop(p *proc) {
	s.t.Helper()
	if p == nil || !p.running() {
		if p != nil {
			s.t.Logf("%s had already exited: %v", p.name, p.err)
		}
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			s.t.Logf("%s exited on SIGTERM with %v", p.name, p.err)
		}
	case <-time.After(30 * time.Second):
		s.t.Logf("%s did not exit within 30s of SIGTERM; killed", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (s *stack) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	// SHUKEI_TEST_LOG_DIR keeps every role's and CLI run's whole output, for reading a failure
	// against the timeline (the test itself prints only the last lines).
	if dir := os.Getenv("SHUKEI_TEST_LOG_DIR"); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		for i, o := range s.outputs {
			name := strings.Map(func(r rune) rune {
				if r == '/' || r == ' ' || r == '=' || r == '(' || r == ')' {
					return '_'
				}
				return r
			}, o.name)
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d-%.60s.log", i, name)), o.out.Bytes(), 0o644)
		}
	}
}

// rawMsg is one message the test wrote (or had the collector write) to the raw topic.
type rawMsg struct {
	key, value []byte
}

// produce writes messages straight to the raw topic, keyed, with the partitioner Shukei's own
// writers use (topic.KeyPartition: kafka-go's consistent Murmur2).
func (s *stack) produce(msgs []rawMsg) {
	s.t.Helper()
	w := &kafka.Writer{
		Addr: kafka.TCP(s.brokers...), Topic: s.raw,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchBytes: 4 << 20, BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < len(msgs); i += 500 {
		var batch []kafka.Message
		for _, m := range msgs[i:min(i+500, len(msgs))] {
			batch = append(batch, kafka.Message{Key: m.key, Value: m.value})
		}
		if err := w.WriteMessages(ctx, batch...); err != nil {
			s.t.Fatalf("write to the raw topic: %v", err)
		}
	}
}

// endOffsets is the next offset of every partition of a topic.
func (s *stack) endOffsets(name string, parts int) map[int]int64 {
	s.t.Helper()
	out := map[int]int64{}
	for p := range parts {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := kafka.DialLeader(ctx, "tcp", s.brokers[0], name, p)
		cancel()
		if err != nil {
			s.t.Fatalf("partition %d of %s: %v", p, name, err)
		}
		out[p], err = c.ReadLastOffset()
		_ = c.Close()
		if err != nil {
			s.t.Fatalf("last offset of %s/%d: %v", name, p, err)
		}
	}
	return out
}

// readRaw reads the whole raw topic and checks it got every message up to the end offsets.
func (s *stack) readRaw() []kafka.Message {
	s.t.Helper()
	end := s.endOffsets(s.raw, s.rawParts)
	var total int64
	for _, o := range end {
		total += o
	}
	msgs := servicetest.ReadTopic(s.t, s.brokers, s.raw)
	if int64(len(msgs)) != total {
		s.t.Fatalf("harness: read %d messages back from the raw topic, its end offsets say %d", len(msgs), total)
	}
	return msgs
}

// readDLQ reads every record of the DLQ topic.
func (s *stack) readDLQ() []kafka.Message {
	s.t.Helper()
	parts, err := topic.Partitions(context.Background(), s.brokers, s.dlq)
	if err != nil {
		s.t.Fatalf("partitions of the DLQ topic: %v", err)
	}
	end := s.endOffsets(s.dlq, parts[s.dlq])
	var total int64
	for _, o := range end {
		total += o
	}
	msgs := servicetest.ReadTopic(s.t, s.brokers, s.dlq)
	if int64(len(msgs)) != total {
		s.t.Fatalf("harness: read %d records back from the DLQ topic, its end offsets say %d", len(msgs), total)
	}
	return msgs
}

const accountedQuery = "SELECT uniqExact(kafka_partition, kafka_offset) FROM (" +
	"SELECT kafka_partition, kafka_offset FROM %[1]s.events " +
	"UNION ALL SELECT kafka_partition, kafka_offset FROM %[1]s.rejections WHERE class != 'checkpoint')"

// runProcessor starts the processor, waits until the store accounts for total distinct raw
// offsets (events and non-checkpoint rejections, migrations/0002) and stops it. It
// gives up, with an error, after within or when nothing more was accounted for in 45 s,
// and then returns false.
func (s *stack) runProcessor(total int, within time.Duration, extraEnv ...string) bool {
	s.t.Helper()
	p := s.start("processor", extraEnv...)
	began := time.Now()
	deadline := began.Add(within)
	var n, last uint64
	lastMove := time.Now()
	for {
		err := s.conn.QueryRow(context.Background(), fmt.Sprintf(accountedQuery, s.db)).Scan(&n)
		if err == nil && n >= uint64(total) {
			s.t.Logf("processor accounted for %d of %d raw offsets after %s", n, total, time.Since(began).Round(100*time.Millisecond))
			time.Sleep(time.Second) // a DLQ write or a second copy would show now
			s.stop(p)
			return true
		}
		if n != last {
			last, lastMove = n, time.Now()
		}
		if !p.running() {
			s.t.Errorf("promise 3: the processor exited (%v) with %d of %d raw offsets accounted for:\n%s", p.err, n, total, s.redact(tail(p.out, 30)))
			return false
		}
		stalled := time.Since(lastMove) > 45*time.Second
		if stalled || time.Now().After(deadline) {
			why := fmt.Sprintf("within %s", within)
			if stalled {
				why = "(nothing more for 45 s: stuck, not lagging)"
			}
			s.t.Errorf("promise 3 (every message ends in exactly one place): the processor accounted for only %d of %d raw offsets %s; its last lines:\n%s",
				n, total, why, s.redact(tail(p.out, 12)))
			s.stop(p)
			return false
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// outcome is what the store says about one raw offset.
type outcome struct {
	stored  int
	reasons []string
}

// outcomes reads every accepted event and every (non-checkpoint) rejection by raw offset.
func (s *stack) outcomes() map[[2]int64]*outcome {
	s.t.Helper()
	ctx := context.Background()
	out := map[[2]int64]*outcome{}
	get := func(p uint16, o uint64) *outcome {
		k := [2]int64{int64(p), int64(o)}
		if out[k] == nil {
			out[k] = &outcome{}
		}
		return out[k]
	}
	rows, err := s.conn.Query(ctx, "SELECT kafka_partition, kafka_offset FROM "+s.db+".events")
	if err != nil {
		s.t.Fatalf("read the event store: %v", err)
	}
	for rows.Next() {
		var p uint16
		var o uint64
		if err := rows.Scan(&p, &o); err != nil {
			s.t.Fatal(err)
		}
		get(p, o).stored++
	}
	rows.Close()
	rows, err = s.conn.Query(ctx, "SELECT kafka_partition, kafka_offset, reason FROM "+s.db+".rejections WHERE class != 'checkpoint'")
	if err != nil {
		s.t.Fatalf("read the rejections: %v", err)
	}
	for rows.Next() {
		var p uint16
		var o uint64
		var reason string
		if err := rows.Scan(&p, &o, &reason); err != nil {
			s.t.Fatal(err)
		}
		r := get(p, o)
		r.reasons = append(r.reasons, reason)
	}
	rows.Close()
	return out
}

// reasonRE is what a machine-readable reason looks like: a lower-case code, dotted for
// sub-kinds (input_data.email).
var reasonRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)

func machineReadable(reason string) bool { return len(reason) <= 64 && reasonRE.MatchString(reason) }

// accountFor checks promise 3's "every message of the raw topic ends in exactly one place:
// stored, or refused with a reason" for every raw message, and returns the outcomes.
// describe names a raw message for failure messages (never with a refused value in it).
func (s *stack) accountFor(raw []kafka.Message, describe func(kafka.Message) string) map[[2]int64]*outcome {
	s.t.Helper()
	outs := s.outcomes()
	inTopic := map[[2]int64]bool{}
	var bad []string
	for _, m := range raw {
		k := [2]int64{int64(m.Partition), m.Offset}
		inTopic[k] = true
		o := outs[k]
		switch {
		case o == nil:
			bad = append(bad, fmt.Sprintf("offset %d/%d (%s) is neither stored nor refused", m.Partition, m.Offset, describe(m)))
		case o.stored+len(o.reasons) != 1:
			bad = append(bad, fmt.Sprintf("offset %d/%d (%s) is accounted %d times (stored %d, refused %d)", m.Partition, m.Offset, describe(m), o.stored+len(o.reasons), o.stored, len(o.reasons)))
		case len(o.reasons) == 1 && !machineReadable(o.reasons[0]):
			bad = append(bad, fmt.Sprintf("offset %d/%d (%s) is refused without a machine-readable reason (%d bytes of reason)", m.Partition, m.Offset, describe(m), len(o.reasons[0])))
		}
	}
	var stray []string
	for k := range outs {
		if !inTopic[k] {
			stray = append(stray, fmt.Sprintf("%d/%d", k[0], k[1]))
		}
	}
	sort.Strings(stray)
	if len(stray) > 0 {
		bad = append(bad, fmt.Sprintf("%d stored or refused rows name offsets the raw topic does not hold: %s", len(stray), strings.Join(stray[:min(10, len(stray))], ", ")))
	}
	reportList(s.t, "promise 3: every message of the raw topic ends in exactly one place (stored, or refused with a reason)", bad)
	return outs
}

// reportList fails the test with a bounded list, after summary lines (all of them).
func reportList(t *testing.T, title string, lines []string, head ...string) {
	t.Helper()
	if len(lines) == 0 {
		return
	}
	const most = 40
	shown := lines[:min(most, len(lines))]
	more := ""
	if len(lines) > most {
		more = fmt.Sprintf("\n  … and %d more", len(lines)-most)
	}
	all := append(append([]string(nil), head...), shown...)
	t.Errorf("%s — %d violation(s):\n  %s%s", title, len(lines), strings.Join(all, "\n  "), more)
}

// tail is the last n lines of an output, each cut to 400 bytes.
func tail(o *servicetest.Output, n int) string {
	ls := strings.Split(o.Tail(n), "\n")
	for i, l := range ls {
		if len(l) > 400 {
			ls[i] = l[:400] + fmt.Sprintf(" [… %d more bytes]", len(l)-400)
		}
	}
	return strings.Join(ls, "\n")
}

// storedEventIDs reads the event ids of every table of the event store and the purpose
// databases that has an event_id column (not the rejections table: it records refusals), by
// event id.
func (s *stack) storedEventIDs() map[string][]string {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.conn.Query(ctx, "SELECT database, table FROM system.columns WHERE name = 'event_id' AND (database = ? OR startsWith(database, ?)) AND NOT (database = ? AND table = 'rejections')", s.db, s.db+"_", s.db)
	if err != nil {
		s.t.Fatalf("list event_id columns: %v", err)
	}
	var tables [][2]string
	for rows.Next() {
		var d, tb string
		if err := rows.Scan(&d, &tb); err != nil {
			s.t.Fatal(err)
		}
		tables = append(tables, [2]string{d, tb})
	}
	rows.Close()
	out := map[string][]string{} // event id → tables holding it
	for _, tb := range tables {
		if strings.HasPrefix(tb[1], ".inner") {
			continue // a view's storage, read through the view's target
		}
		var engine string
		if err := s.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", tb[0], tb[1]).Scan(&engine); err != nil || engine == "MaterializedView" || engine == "View" {
			continue
		}
		r, err := s.conn.Query(ctx, "SELECT toString(event_id) FROM "+quoteIdent(tb[0])+"."+quoteIdent(tb[1]))
		if err != nil {
			s.t.Errorf("read event ids of %s.%s: %v", tb[0], tb[1], err)
			continue
		}
		for r.Next() {
			var id string
			if err := r.Scan(&id); err != nil {
				s.t.Fatal(err)
			}
			out[id] = append(out[id], tb[0]+"."+tb[1])
		}
		r.Close()
	}
	return out
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}

// ---- the collector's HTTP API ----

// posted is the collector's answer for one event.
type posted struct {
	status  string // accepted, rejected, retry; "" when no per-event result came back
	reason  string
	message string
	http    int    // the HTTP status of the request that settled it
	err     string // transport error
}

// postEvents posts events (each one JSON object) to POST /v1/events as NDJSON batches with
// the token, and returns the collector's per-event answers. 503, 429, 5xx and transport errors
// are retried (bounded); per-event "retry" results are resent (bounded); a batch refused as a
// whole with another status is resent one event a request, so each event gets its own answer.
func postEvents(t *testing.T, base, token string, bodies [][]byte) []posted {
	t.Helper()
	res := make([]posted, len(bodies))
	client := &http.Client{Timeout: 30 * time.Second}
	var idx []int
	for i := range bodies {
		idx = append(idx, i)
	}
	for attempt := 0; len(idx) > 0; attempt++ {
		if attempt == 6 {
			t.Errorf("the collector kept asking to retry %d events after 6 rounds", len(idx))
			break
		}
		var again []int
		for len(idx) > 0 {
			n, size := 0, 0
			for n < len(idx) && n < 500 && size+len(bodies[idx[n]]) < 512<<10 {
				size += len(bodies[idx[n]]) + 1
				n++
			}
			batch := idx[:n]
			idx = idx[n:]
			again = append(again, postBatch(t, client, base, token, bodies, batch, res)...)
		}
		idx = again
		if len(idx) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	return res
}

// postBatch posts one batch and settles what the answer settles; it returns the events to
// send again.
func postBatch(t *testing.T, client *http.Client, base, token string, bodies [][]byte, batch []int, res []posted) []int {
	t.Helper()
	var body bytes.Buffer
	for _, i := range batch {
		body.Write(bodies[i])
		body.WriteByte('\n')
	}
	var resp *http.Response
	var b []byte
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", bytes.NewReader(body.Bytes()))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/x-ndjson")
		var err error
		resp, err = client.Do(req)
		if err == nil {
			b, err = io.ReadAll(io.LimitReader(resp.Body, 32<<20))
			resp.Body.Close()
		}
		retryable := err != nil || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if !retryable {
			break
		}
		if time.Now().After(deadline) {
			for _, i := range batch {
				if err != nil {
					res[i] = posted{err: err.Error()}
				} else {
					res[i] = posted{http: resp.StatusCode}
				}
			}
			return nil
		}
		wait := 500 * time.Millisecond
		if resp != nil {
			if s, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && s > 0 && s < 10 {
				wait = time.Duration(s) * time.Second
			}
		}
		time.Sleep(wait)
	}
	if resp.StatusCode != http.StatusOK {
		if len(batch) > 1 {
			// Refused as a whole: each event alone, so each gets its own answer.
			var again []int
			for _, i := range batch {
				again = append(again, postBatch(t, client, base, token, bodies, []int{i}, res)...)
			}
			return again
		}
		res[batch[0]] = posted{http: resp.StatusCode}
		return nil
	}
	var reply struct {
		Results []struct {
			Index   int    `json:"index"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &reply); err != nil || len(reply.Results) != len(batch) {
		for _, i := range batch {
			res[i] = posted{http: resp.StatusCode, err: fmt.Sprintf("reply with %d results for %d events (decode: %v)", len(reply.Results), len(batch), err)}
		}
		return nil
	}
	var again []int
	seen := map[int]bool{}
	for _, r := range reply.Results {
		if r.Index < 0 || r.Index >= len(batch) || seen[r.Index] {
			continue
		}
		seen[r.Index] = true
		i := batch[r.Index]
		if r.Status == "retry" {
			again = append(again, i)
			continue
		}
		res[i] = posted{status: r.Status, reason: r.Reason, message: r.Message, http: resp.StatusCode}
	}
	for k, i := range batch {
		if !seen[k] {
			res[i] = posted{http: resp.StatusCode, err: "no result for this index"}
		}
	}
	return again
}
