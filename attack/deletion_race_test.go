package attack

// Promise 8's second half (docs/promises.md; brief: DELETION-RACE.md): once 'shukei tenants
// delete' has returned, no row of the tenant arrives in any table of any Shukei database
// afterwards (the audit log excepted), not even from events the processor had already read,
// decided or half-written when the deletion began — whether it is paused, resumed or killed
// at any moment meanwhile; and every 'shukei retention run' sweeps what the stated limit lets
// through, and audits the sweep.
//
// Written from the promise, the README, docs/, the command-line help, internal/servicetest,
// the earlier attack harness (attack/*.go, attack/*.md) and faults/*_test.go alone: nothing
// under pipeline/, retention/, registry/, aggregator/, query/, anonymizer/, gate/,
// migrations/, databases/, audit/, config/, cmd/shukei/ or ops/ was read. What these tests
// know of the tables comes from the live server (system.tables, system.columns), as an
// administrator would learn it.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

const (
	// drBatchTimeout is processor.batch_timeout's default (the harness's stacks use 200 ms;
	// these attacks pause the processor at offsets into a batch of the default length).
	drBatchTimeout = time.Second
	// drRefresh is registry.refresh's default.
	drRefresh = 5 * time.Second
	// drSettle is how long every processor and aggregator runs, at least, after its last
	// resumption or restart before the final count: well past any batch and insert timeout.
	drSettle = 30 * time.Second
	// drDeleteTimeout bounds one 'shukei tenants delete' (the promise says it returns).
	drDeleteTimeout = 3 * time.Minute
	// drWindow is the aggregator's base window in the aggregator attack: the shortest it takes
	// (a divisor of 24h, at least 1m), so that windows holding the victim's events close
	// during the test.
	drWindow = time.Minute
)

// ---- the stack ----

// drStack is one test's Shukei (the harness's stack: its own database, topics, master key and
// role users) with a producer writing every tenant's events to the raw topic continuously, the
// running processor(s) and, for the aggregator attack, the aggregator.
type drStack struct {
	*stack
	began     time.Time
	prod      *drProducer
	bystander string
	victims   []string
	proc      *proc   // the processor the scenarios pause, resume and kill
	others    []*proc // further processors (the zombie scenario)
	agg       *proc
	aggAddr   string
	results   []*drResult
	// lastWake is when a paused or killed role last ran again: the final count waits drSettle
	// past it.
	lastWake time.Time
	// stalled: the processor stopped storing the bystander's events after a deletion (a
	// finding, reported once); later processor scenarios of the stack are not run.
	stalled bool

	tlMu     sync.Mutex
	timeline []string
}

// drResult is what one scenario found about its victim.
type drResult struct {
	scenario, victim string
	inFlight         int // victim events produced before the pause and not stored at the pause
	deleteTook       time.Duration
	before           map[string]uint64 // table → victim rows, at the pause, before the deletion
	afterReturn      map[string]uint64 // the moment 'tenants delete' returned
	final            map[string]uint64 // after everything settled
	afterRetention   map[string]uint64 // after 'shukei retention run'
	strayStrings     []string          // any string column naming the victim (final)
	arrived          []string          // the rows found at the final count (up to 5 a table)
	timeline         []string
	skipped          bool // not run (the pipeline had stopped)
}

// logf logs a line of the stack's timeline (seconds since the stack began, UTC wall clock).
func (s *drStack) logf(format string, args ...any) string {
	now := time.Now()
	line := fmt.Sprintf("%7.2fs %s ", now.Sub(s.began).Seconds(), now.UTC().Format("15:04:05.000")) + fmt.Sprintf(format, args...)
	s.tlMu.Lock()
	s.timeline = append(s.timeline, line)
	s.tlMu.Unlock()
	s.t.Log(line)
	return line
}

// mark is where the timeline is now.
func (s *drStack) mark() int {
	s.tlMu.Lock()
	defer s.tlMu.Unlock()
	return len(s.timeline)
}

// drLetters is n random lower-case letters.
func drLetters(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b)
}

// drLast is the last line of a command's output.
func drLast(out string) string {
	if strings.TrimSpace(out) == "" {
		return "(no output)"
	}
	return lastLine(out)
}

// drContent says which tenants also send events carrying content (one in 24, refused).
type drContent int

const (
	contentFromAll drContent = iota
	contentFromVictims
	contentFromBystander
)

// newDRStack makes the stack: migrate (one at a time with the other attacks' stacks), the
// audit log's sequencer of its own, processor.batch_timeout at its default, a bystander and
// victims (all keyed to the bystander's raw partition, so that the bystander's flow shows that
// partition being worked on), every tenant contracted, consenting to external_consented and
// with an open ticket (rows in more tables), and the producer started.
func newDRStack(t *testing.T, victims int, withAggregator bool, content drContent) *drStack {
	t.Helper()
	began := time.Now()
	usersDir := servicetest.UsersDir(t)
	var st *stack
	func() {
		trustMigrate.Lock()
		defer trustMigrate.Unlock() // newStackEnv may skip (runtime.Goexit) without services
		st = newStackEnv(t, drRefresh, "SHUKEI_CLICKHOUSE_USERS_DIR="+usersDir)
	}()
	db := st.db
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(usersDir, db+"*"))
		for _, f := range files {
			base := filepath.Base(f)
			if strings.HasPrefix(base, db+"-") || strings.HasPrefix(base, db+".") || strings.HasPrefix(base, db+"_") {
				_ = os.Remove(f)
			}
		}
	})
	s := &drStack{stack: st, began: began}
	if dir := os.Getenv("SHUKEI_TEST_DR_DUMP"); dir != "" {
		// Every role's and command's output, whole, for the investigation of a finding.
		t.Cleanup(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for i, o := range s.outputs {
				name := fmt.Sprintf("%s-%02d-%s.log", st.db, i, strings.NewReplacer(" ", "_", "/", "_", "(", "", ")", "").Replace(o.name))
				_ = os.WriteFile(filepath.Join(dir, cut(name, 150)), o.out.Bytes(), 0o644)
			}
		})
	}
	s.env = append(s.env,
		"SHUKEI_PROCESSOR_BATCH_TIMEOUT="+drBatchTimeout.String(),
		"SHUKEI_AUDIT_TOPIC="+servicetest.Topic(t, st.brokers, 1),
	)
	if withAggregator {
		// Weeks and months are released (the defaults), so each closed base window keeps
		// every tenant's raw material (aggregate_state of kind tenant, README); base windows
		// are not released on their own; the budget is no limit here.
		s.env = append(s.env,
			"SHUKEI_KAFKA_RELEASE_TOPIC="+servicetest.Topic(t, st.brokers, 1),
			"SHUKEI_AGGREGATOR_GROUP_ID="+servicetest.Name(t, "atk.agg."),
			"SHUKEI_AGGREGATOR_WINDOW="+drWindow.String(),
			"SHUKEI_AGGREGATOR_ALLOWED_LATENESS=1s",
			"SHUKEI_AGGREGATOR_RELEASE_INTERVAL=250ms",
			"SHUKEI_AGGREGATOR_BUDGET_EPSILON=100000", "SHUKEI_AGGREGATOR_BUDGET_DELTA=0.5",
		)
	}
	if out, err := s.tryCLI("config"); err != nil {
		t.Fatalf("harness: the configuration of this attack is refused: %v\n%s", err, tailText(out, 10))
	}
	// Letters only: a run of digits in a tenant id can look like an identifier to the
	// input-data guard (e.g. a ZIP+4 code), which refuses every event of such a tenant.
	sfx := drLetters(6)
	s.bystander = "drb-" + sfx
	part := abPartition([]byte(s.bystander), s.rawParts)
	for i := 0; len(s.victims) < victims; i++ {
		v := fmt.Sprintf("drv%c-%s-%s", 'a'+len(s.victims), sfx, drLetters(4))
		if abPartition([]byte(v), s.rawParts) == part {
			s.victims = append(s.victims, v)
		}
	}
	for _, ten := range append([]string{s.bystander}, s.victims...) {
		s.addTenant(ten, "contracted")
		s.cli("tenants", "consent", "--tenant", ten, "--purpose", "external_consented", "--version", "1")
		s.cli("tenants", "ticket", "open", "--tenant", ten, "--ticket", "DR-"+strings.ToUpper(randHex(3)), "--ttl", "2h", "--by", "deletion-race")
	}
	s.prod = newDRProducer(s.brokers, s.raw)
	s.prod.content = func(tenant string) bool {
		switch content {
		case contentFromVictims:
			return tenant != s.bystander
		case contentFromBystander:
			return tenant == s.bystander
		}
		return true
	}
	t.Cleanup(s.prod.close)
	// A little history (the last three minutes), then the steady flow.
	var hist []drMsg
	for _, ten := range append([]string{s.bystander}, s.victims...) {
		for k := 0; k < 36; k++ {
			hist = append(hist, s.prod.event(ten, k, time.Now().Add(-3*time.Minute+time.Duration(k)*5*time.Second)))
		}
	}
	if err := s.prod.write(hist); err != nil {
		t.Fatalf("harness: write the history to the raw topic: %v", err)
	}
	s.prod.run(append([]string{s.bystander}, s.victims...), 100*time.Millisecond, 4)
	s.logf("stack %s: bystander %s, victims %s (raw partition %d of %d), migrate and tenants took %s",
		s.db, s.bystander, strings.Join(s.victims, ", "), part, s.rawParts, time.Since(began).Round(100*time.Millisecond))
	return s
}

// startRole starts 'shukei <args>' labelled label with extra environment and waits for its
// /healthz on health.
func (s *drStack) startRole(label, health string, env []string, args ...string) *proc {
	s.t.Helper()
	p := &proc{name: label, out: s.addOutput(label), done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, args...)
	p.cmd.Dir, p.cmd.Env = s.dir, append(append([]string(nil), s.env...), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", label, err)
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
		resp, err := client.Get("http://" + health + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				// Its own /healthz, not another process's on the same port: it is still
				// running a moment later and did not fail to listen.
				time.Sleep(300 * time.Millisecond)
				if !p.running() || strings.Contains(p.out.String(), "address already in use") {
					s.t.Fatalf("harness: %s did not start (%v); /healthz on %s was answered by another process:\n%s", label, p.err, health, tail(p.out, 20))
				}
				return p
			}
		}
		if !p.running() {
			s.t.Fatalf("%s exited during start-up (%v):\n%s", label, p.err, tail(p.out, 40))
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: /healthz on %s does not answer 200 after 60s:\n%s", label, health, tail(p.out, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drAddrs are the listen addresses handed out by drAddr in this test binary: the attacks'
// stacks run at once, and freeAddr's port, closed before the role binds it, could be handed to
// two of them.
var (
	drAddrMu sync.Mutex
	drAddrs  = map[string]bool{}
)

// drAddr is a loopback address nothing listens on, never handed out before by drAddr.
func drAddr(t *testing.T) string {
	drAddrMu.Lock()
	defer drAddrMu.Unlock()
	for {
		a := freeAddr(t)
		if !drAddrs[a] {
			drAddrs[a] = true
			return a
		}
	}
}

// startProcessor starts a processor on a listen address of its own.
func (s *drStack) startProcessor(label string) *proc {
	s.t.Helper()
	s.addrs["processor"] = drAddr(s.t)
	p := s.startRole(label, s.addrs["processor"], []string{"SHUKEI_PROCESSOR_LISTEN=" + s.addrs["processor"]}, "processor")
	s.logf("%s started (pid %d)", label, p.cmd.Process.Pid)
	return p
}

// startAggregator starts an aggregator on a listen address of its own.
func (s *drStack) startAggregator(label string) *proc {
	s.t.Helper()
	s.aggAddr = drAddr(s.t)
	p := s.startRole(label, s.aggAddr, []string{"SHUKEI_AGGREGATOR_LISTEN=" + s.aggAddr}, "aggregator")
	s.logf("%s started (pid %d)", label, p.cmd.Process.Pid)
	return p
}

func (s *drStack) signal(p *proc, sig syscall.Signal) {
	s.t.Helper()
	if !p.running() {
		s.t.Errorf("harness: %s is not running (%v) when it should get %v:\n%s", p.name, p.err, sig, tail(p.out, 20))
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("harness: %v to %s: %v", sig, p.name, err)
	}
}

// kill SIGKILLs a (paused or running) role and waits for it to be gone.
func (s *drStack) kill(p *proc) {
	s.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		s.t.Errorf("harness: %s still there 20 s after SIGKILL", p.name)
	}
}

// ---- the producer ----

type drMsg struct {
	tenant, id string
	value      []byte
	refused    bool // carries content: the pipeline refuses it
}

// drProducer writes events straight to the raw topic, keyed by tenant id with the partitioner
// Shukei's own writers use (stack.produce does the same), and counts what Kafka acknowledged.
type drProducer struct {
	w        *kafka.Writer
	mu       sync.Mutex
	produced map[string]int // events the pipeline is to store
	refused  map[string]int // events carrying content
	ids      map[string][]string
	errs     []string
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	// content says which tenants also send events carrying content (refused; set before the
	// producer runs)
	content func(tenant string) bool
}

func newDRProducer(brokers []string, topicName string) *drProducer {
	return &drProducer{
		w: &kafka.Writer{
			Addr: kafka.TCP(brokers...), Topic: topicName,
			Balancer:     &kafka.Murmur2Balancer{Consistent: true},
			RequiredAcks: kafka.RequireAll, BatchSize: 500, BatchBytes: 4 << 20, BatchTimeout: 2 * time.Millisecond,
		},
		produced: map[string]int{}, refused: map[string]int{}, ids: map[string][]string{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// drEvent is the k-th event of a tenant: feature uses, app accesses, operations, settings,
// client environments and a tenant profile now and then (the valid shapes of schemas/testdata),
// and, when content is true, one in 24 carrying an e-mail address (refused).
func (p *drProducer) event(tenant string, k int, at time.Time) drMsg {
	return drEvent(tenant, k, at, p.content == nil || p.content(tenant))
}

func drEvent(tenant string, k int, at time.Time, content bool) drMsg {
	id := uuid.NewString()
	users := []string{"3f1c9a52-7b0e-4d6e-9a51-2c8e4f0b7d13", "10452", "7d0c5e1a-2b3f-4c8d-9e6a-1f2b3c4d5e6f", "u" + randDigits(6)}
	ev := map[string]any{
		"event_id": id, "tenant_id": tenant, "occurred_at": at.UTC().Format(time.RFC3339Nano),
		"source": "web-sdk", "user": users[k%len(users)],
		"client": map[string]any{"os": "windows", "os_version": "10.0.22631", "device_kind": "desktop"},
	}
	features := []string{"app.record.create", "space.post.reaction", "app.record.update"}
	if content && k%24 == 17 {
		// Content where a feature id belongs: refused, and (the tenant being registered and
		// active) its refusal keeps the tenant id (README), so the rejections table holds rows
		// of the tenant too.
		ev["schema"] = "feature_use/v1"
		ev["data"] = map[string]any{"feature_id": "taro.yamada" + randDigits(3) + "@example.co.jp", "count": 1, "records_registered": 0}
		b, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		return drMsg{tenant: tenant, id: id, value: b, refused: true}
	}
	switch k % 12 {
	case 0, 3, 6, 9:
		ev["schema"] = "feature_use/v1"
		ev["data"] = map[string]any{"feature_id": features[k%len(features)], "count": 1 + k%5, "records_registered": k % 3}
	case 1, 7:
		ev["schema"] = "app_access/v1"
		ev["data"] = map[string]any{"app_id": "1047", "action": "open"}
	case 2, 8:
		ev["schema"], ev["source"] = "operation/v1", "api-gateway"
		ev["client"] = map[string]any{"os": "other", "device_kind": "other"}
		ev["data"] = map[string]any{"operation_id": "record.bulk_update", "app_id": "1047", "result_code": "ok", "request_id": randHex(16)}
	case 4, 10:
		ev["schema"] = "settings/v1"
		ev["data"] = map[string]any{"setting_key": "notification.digest_frequency", "value": "weekly", "customization_present": true, "customization_count": 1}
	case 5:
		ev["schema"] = "client_env/v1"
		ev["data"] = map[string]any{"client_kind": "browser", "browser": "chrome"}
	case 11:
		ev["schema"], ev["source"] = "tenant_profile/v1", "batch-tenant-profile"
		delete(ev, "user")
		delete(ev, "client")
		ev["data"] = map[string]any{"user_count": 1250, "organization_count": 48}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return drMsg{tenant: tenant, id: id, value: b}
}

// write writes messages and counts them once Kafka acknowledged them.
func (p *drProducer) write(msgs []drMsg) error {
	var batch []kafka.Message
	for _, m := range msgs {
		batch = append(batch, kafka.Message{Key: []byte(m.tenant), Value: m.value})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.w.WriteMessages(ctx, batch...); err != nil {
		p.mu.Lock()
		p.errs = append(p.errs, err.Error())
		p.mu.Unlock()
		return err
	}
	p.mu.Lock()
	for _, m := range msgs {
		if m.refused {
			p.refused[m.tenant]++
		} else {
			p.produced[m.tenant]++
		}
		p.ids[m.tenant] = append(p.ids[m.tenant], m.id)
	}
	p.mu.Unlock()
	return nil
}

// burst writes n events of a tenant now.
func (p *drProducer) burst(tenant string, n int) error {
	var msgs []drMsg
	for k := range n {
		msgs = append(msgs, p.event(tenant, k, time.Now()))
	}
	return p.write(msgs)
}

// run writes per events of every tenant every tick until stopped (a deleted tenant's
// collectors do not know it was deleted: its events keep coming).
func (p *drProducer) run(tenants []string, tick time.Duration, per int) {
	go func() {
		defer close(p.done)
		k := map[string]int{} // each tenant's own count: every tenant gets every kind of event
		tk := time.NewTicker(tick)
		defer tk.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tk.C:
			}
			var msgs []drMsg
			for _, ten := range tenants {
				for range per {
					msgs = append(msgs, p.event(ten, k[ten], time.Now()))
					k[ten]++
				}
			}
			_ = p.write(msgs)
		}
	}()
}

// halt stops the steady flow and waits for its last write.
func (p *drProducer) halt() {
	p.once.Do(func() { close(p.stop) })
	select {
	case <-p.done:
	case <-time.After(time.Minute):
	}
}

func (p *drProducer) close() {
	p.halt()
	_ = p.w.Close()
}

// count is how many events of a tenant the pipeline is to store Kafka acknowledged.
func (p *drProducer) count(tenant string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.produced[tenant]
}

func (p *drProducer) eventIDs(tenant string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids[tenant]...)
}

// ---- what the server holds ----

// drTable is one stored table of a Shukei database (not a view) and its columns.
type drTable struct {
	db, name, engine string
	cols             map[string]string // name → type
	order            []string          // the columns an INSERT may name, in table order
}

func (tb drTable) String() string { return tb.db + "." + tb.name }

func (tb drTable) ident() string { return quoteIdent(tb.db) + "." + quoteIdent(tb.name) }

// tables lists every table of every Shukei database (<db> and <db>_*) that stores rows, with
// its columns, as an administrator finds them in system.tables and system.columns. Views
// are left out (what they show is stored in their target or .inner table, which is listed);
// so are tables of engines that hold no rows of their own or consume when read (Kafka).
func (s *drStack) tables() []drTable {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := s.conn.Query(ctx, "SELECT database, name, engine FROM system.tables WHERE database = ? OR startsWith(database, ?)", s.db, s.db+"_")
	if err != nil {
		s.t.Fatalf("list the tables: %v", err)
	}
	byName := map[string]*drTable{}
	var out []*drTable
	for rows.Next() {
		var tb drTable
		if err := rows.Scan(&tb.db, &tb.name, &tb.engine); err != nil {
			s.t.Fatal(err)
		}
		switch tb.engine {
		case "View", "MaterializedView", "Kafka", "Null", "Dictionary", "LiveView":
			continue
		}
		tb.cols = map[string]string{}
		p := &tb
		byName[tb.db+"\x00"+tb.name] = p
		out = append(out, p)
	}
	rows.Close()
	rows, err = s.conn.Query(ctx, "SELECT database, table, name, type, default_kind FROM system.columns WHERE database = ? OR startsWith(database, ?)", s.db, s.db+"_")
	if err != nil {
		s.t.Fatalf("list the columns: %v", err)
	}
	for rows.Next() {
		var d, tbl, name, typ, kind string
		if err := rows.Scan(&d, &tbl, &name, &typ, &kind); err != nil {
			s.t.Fatal(err)
		}
		if p := byName[d+"\x00"+tbl]; p != nil {
			p.cols[name] = typ
			if kind != "MATERIALIZED" && kind != "ALIAS" {
				p.order = append(p.order, name)
			}
		}
	}
	rows.Close()
	res := make([]drTable, 0, len(out))
	for _, p := range out {
		res = append(res, *p)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].String() < res[j].String() })
	return res
}

// isAuditLog is the one exception of promise 8: the audit log (a table audit_log, in
// <db>_audit or, in an older layout, <db>).
func (s *drStack) isAuditLog(tb drTable) bool {
	return tb.name == "audit_log" && (tb.db == s.db+"_audit" || tb.db == s.db)
}

// tenantRows counts, in every table with a tenant_id column but the audit log, the rows of
// each tenant: tenant → table → rows (only tables holding some).
func (s *drStack) tenantRows(tenants ...string) map[string]map[string]uint64 {
	s.t.Helper()
	out := map[string]map[string]uint64{}
	for _, ten := range tenants {
		out[ten] = map[string]uint64{}
	}
	var lits []string
	for _, ten := range tenants {
		lits = append(lits, "'"+ten+"'") // tenant ids of these tests are [a-z0-9-]
	}
	for _, tb := range s.tables() {
		if _, ok := tb.cols["tenant_id"]; !ok || s.isAuditLog(tb) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rows, err := s.conn.Query(ctx, "SELECT toString(tenant_id) AS t, count() FROM "+tb.ident()+" WHERE toString(tenant_id) IN ("+strings.Join(lits, ",")+") GROUP BY t")
		if err != nil {
			cancel()
			s.t.Errorf("harness: count the tenants' rows of %s: %v", tb, err)
			continue
		}
		for rows.Next() {
			var ten string
			var n uint64
			if err := rows.Scan(&ten, &n); err != nil {
				s.t.Fatal(err)
			}
			if n > 0 && out[ten] != nil {
				out[ten][tb.String()] = n
			}
		}
		rows.Close()
		cancel()
	}
	return out
}

func (s *drStack) rowsOf(tenant string) map[string]uint64 { return s.tenantRows(tenant)[tenant] }

// strayStrings finds the tenant's id in any string column of any table but the audit log
// (a row of the tenant whose tenant column is named otherwise, or its id kept in a payload).
func (s *drStack) strayStrings(tenant string) []string {
	s.t.Helper()
	var out []string
	for _, tb := range s.tables() {
		if s.isAuditLog(tb) {
			continue
		}
		var conds []string
		for c, typ := range tb.cols {
			if !strings.Contains(typ, "String") {
				continue
			}
			if strings.HasPrefix(typ, "Array(") {
				conds = append(conds, fmt.Sprintf("arrayExists(x -> position(toString(x), '%s') > 0, %s)", tenant, quoteIdent(c)))
			} else {
				conds = append(conds, fmt.Sprintf("position(toString(%s), '%s') > 0", quoteIdent(c), tenant))
			}
		}
		if len(conds) == 0 {
			continue
		}
		var n uint64
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.conn.QueryRow(ctx, "SELECT count() FROM "+tb.ident()+" WHERE "+strings.Join(conds, " OR ")).Scan(&n)
		cancel()
		if err != nil {
			s.t.Errorf("harness: scan %s for the tenant's id: %v", tb, err)
			continue
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("%s (%d rows)", tb, n))
		}
	}
	sort.Strings(out)
	return out
}

// eventIDRows counts, per table with an event_id column, the rows holding one of the
// tenant's event ids (information: a refusal of a deleted tenant's event may keep its event
// id, without tenant id or payload, README).
func (s *drStack) eventIDRows(ids []string) map[string]uint64 {
	s.t.Helper()
	out := map[string]uint64{}
	if len(ids) == 0 {
		return out
	}
	for _, tb := range s.tables() {
		if _, ok := tb.cols["event_id"]; !ok || s.isAuditLog(tb) {
			continue
		}
		for i := 0; i < len(ids); i += 2000 {
			var lits []string
			for _, id := range ids[i:min(i+2000, len(ids))] {
				lits = append(lits, "'"+id+"'")
			}
			var n uint64
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := s.conn.QueryRow(ctx, "SELECT count() FROM "+tb.ident()+" WHERE toString(event_id) IN ("+strings.Join(lits, ",")+")").Scan(&n)
			cancel()
			if err != nil {
				s.logf("information: count the victim's event ids in %s: %v", tb, err)
				break
			}
			out[tb.String()] += n
		}
		if out[tb.String()] == 0 {
			delete(out, tb.String())
		}
	}
	return out
}

// stored is how many events of a tenant the event store holds.
func (s *drStack) stored(tenant string) uint64 {
	var n uint64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.db+".events WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
		s.t.Errorf("harness: count the stored events of %s: %v", tenant, err)
	}
	return n
}

// reasons is a tenant's refusals (not checkpoints) by reason, for information.
func (s *drStack) reasons(tenant string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := s.conn.Query(ctx, "SELECT reason, count() FROM "+s.db+".rejections WHERE toString(tenant_id) = ? AND class != 'checkpoint' GROUP BY reason ORDER BY reason", tenant)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var r string
		var n uint64
		if rows.Scan(&r, &n) == nil {
			out = append(out, fmt.Sprintf("%s×%d", r, n))
		}
	}
	return strings.Join(out, ", ")
}

// storedQuiet is stored without failing the test on an error.
func (s *drStack) storedQuiet(tenant string) (uint64, error) {
	var n uint64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.db+".events WHERE tenant_id = ?", tenant).Scan(&n)
	return n, err
}

// reached is, per raw partition, the highest offset the store accounts for (stored, refused
// or checkpointed).
func (s *drStack) reached() (map[int]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := s.conn.Query(ctx, "SELECT toInt64(kafka_partition), toInt64(max(kafka_offset)) FROM (SELECT kafka_partition, kafka_offset FROM "+s.db+".events UNION ALL SELECT kafka_partition, kafka_offset FROM "+s.db+".rejections) GROUP BY kafka_partition")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var p, o int64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, err
		}
		out[int(p)] = o
	}
	return out, rows.Err()
}

func (s *drStack) storedAll() (uint64, error) {
	var n uint64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.db+".events").Scan(&n)
	return n, err
}

// awaitBatch waits until the event store grows (a batch of the processor just landed), so
// that what follows happens at a known point of the next batch; it gives up after limit.
func (s *drStack) awaitBatch(limit time.Duration) bool {
	n0, err := s.storedAll()
	if err != nil {
		return false
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if n, err := s.storedAll(); err == nil && n > n0 {
			return true
		}
	}
	return false
}

// awaitFlow waits until the bystander has more stored events than from.
func (s *drStack) awaitFlow(from uint64, limit time.Duration) (time.Duration, bool) {
	began := time.Now()
	for time.Since(began) < limit {
		if n, err := s.storedQuiet(s.bystander); err == nil && n > from {
			return time.Since(began), true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(began), false
}

// ---- deleting ----

type drDeletion struct {
	out  string
	err  error
	took time.Duration
	done chan struct{}
}

// deleteTenant runs 'shukei tenants delete' as an operator would, in the background.
func (s *drStack) deleteTenant(tenant, why string) *drDeletion {
	d := &drDeletion{done: make(chan struct{})}
	o := s.addOutput("shukei tenants delete --tenant " + tenant)
	go func() {
		defer close(d.done)
		ctx, cancel := context.WithTimeout(context.Background(), drDeleteTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, s.bin, "tenants", "delete", "--tenant", tenant, "--reason", why)
		cmd.Dir, cmd.Env = s.dir, s.env
		cmd.Stdout, cmd.Stderr = o, o
		began := time.Now()
		d.err = cmd.Run()
		d.took = time.Since(began)
		d.out = o.String()
	}()
	return d
}

// ---- the scenarios ----

// how a scenario treats the paused role
type drHow int

const (
	resumeAfter  drHow = iota // SIGCONT once the deletion returned
	killAfter                 // SIGKILL once the deletion returned, then a fresh instance
	resumeDuring              // SIGCONT while the deletion runs
	killDuring                // SIGKILL while the deletion runs, and a fresh instance at once
	zombie                    // a second processor takes the partitions over; the paused one resumes after
	noPause                   // the processor keeps running (the aggregator is the one paused, or nothing)
)

type drScenario struct {
	name   string
	how    drHow
	offset time.Duration // when the processor is stopped, after the victim's burst
	during time.Duration // for *During: how long into the deletion
	// then, for noPause, is what is done to the paused role the moment the deletion returned
	// (and its rows were counted).
	then func()
}

// runProcessorScenario: wait for a batch of the processor to land, write a burst of the
// victim's events, stop the processor offset later (mid-batch), count the victim's rows,
// delete the victim with the CLI, and resume or kill the processor as the scenario says.
func (s *drStack) runProcessorScenario(sc drScenario, victim string) *drResult {
	s.t.Helper()
	r := &drResult{scenario: sc.name, victim: victim}
	mark := s.mark()
	defer func() {
		s.tlMu.Lock()
		r.timeline = append([]string(nil), s.timeline[mark:]...)
		s.tlMu.Unlock()
		s.results = append(s.results, r)
	}()
	if s.stalled {
		// The pipeline stopped after an earlier deletion (reported): a pause now would test
		// nothing in flight.
		s.logf("[%s] not run: the processor stores nothing any more since an earlier deletion", sc.name)
		r.skipped = true
		return r
	}
	if !s.awaitBatch(5 * time.Second) {
		s.logf("[%s] no batch of the processor landed within 5 s; going on unsynchronised", sc.name)
	}
	if err := s.prod.burst(victim, 40); err != nil {
		s.t.Errorf("harness: the victim's burst: %v", err)
	}
	burstAt := time.Now()
	time.Sleep(sc.offset)
	s.signal(s.proc, syscall.SIGSTOP)
	s.logf("[%s] processor (pid %d) SIGSTOPped %s after the victim's burst was acknowledged", sc.name, s.proc.cmd.Process.Pid, time.Since(burstAt).Round(time.Millisecond))
	return s.deleteAround(sc, r, victim)
}

// deleteAround counts, deletes, and treats the paused processor as the scenario says.
func (s *drStack) deleteAround(sc drScenario, r *drResult, victim string) *drResult {
	s.t.Helper()
	produced := s.prod.count(victim)
	stored := s.stored(victim)
	r.inFlight = produced - int(stored)
	r.before = s.rowsOf(victim)
	byAtPause := s.stored(s.bystander)
	s.logf("[%s] victim %s: %d events produced, %d stored (%d not stored yet: read, decided or in flight); rows before the deletion: %s",
		sc.name, victim, produced, stored, r.inFlight, drFmt(r.before))
	if n := r.before[s.db+".rejections"]; n > 0 {
		s.logf("[%s] information: the victim's refusals before the deletion, by reason: %s", sc.name, s.reasons(victim))
	}
	if r.before[s.db+".events"] == 0 {
		s.t.Errorf("[%s] harness: the victim %s has no row in %s.events before its deletion: the attack would be vacuous", sc.name, victim, s.db)
	}

	var zp *proc
	if sc.how == zombie {
		// A second processor joins the group; once the paused one's session has expired it
		// takes every partition over (the bystander's flow shows it).
		listen := drAddr(s.t)
		zp = s.startRole("processor 2 (takes over)", listen, []string{"SHUKEI_PROCESSOR_LISTEN=" + listen}, "processor")
		s.others = append(s.others, zp)
		s.logf("[%s] processor 2 (pid %d) started while processor 1 is stopped", sc.name, zp.cmd.Process.Pid)
	}

	del := s.deleteTenant(victim, "deletion race attack: "+sc.name)
	s.logf("[%s] 'shukei tenants delete --tenant %s' started", sc.name, victim)
	switch sc.how {
	case resumeDuring, killDuring:
		select {
		case <-del.done:
			s.logf("[%s] the deletion returned before %s: the role is treated after it instead", sc.name, sc.during)
		case <-time.After(sc.during):
		}
		if sc.how == resumeDuring {
			s.signal(s.proc, syscall.SIGCONT)
			s.logf("[%s] processor SIGCONTed %s into the deletion", sc.name, sc.during)
		} else {
			s.kill(s.proc)
			s.logf("[%s] processor SIGKILLed %s into the deletion", sc.name, sc.during)
			s.proc = s.startProcessor("processor (fresh, started during the deletion)")
		}
		s.lastWake = time.Now()
	}
	<-del.done
	r.deleteTook = del.took
	if del.err != nil {
		s.t.Errorf("[%s] 'shukei tenants delete --tenant %s' failed after %s: %v\n%s", sc.name, victim, del.took.Round(time.Millisecond), del.err, tailText(del.out, 12))
	}
	s.logf("[%s] the deletion returned after %s (%v): %s", sc.name, del.took.Round(time.Millisecond), del.err, drLast(del.out))
	r.afterReturn = s.rowsOf(victim)
	s.logf("[%s] rows of the victim when the deletion returned: %s", sc.name, drFmt(r.afterReturn))

	switch sc.how {
	case resumeAfter:
		s.signal(s.proc, syscall.SIGCONT)
		s.logf("[%s] processor SIGCONTed after the deletion returned", sc.name)
		s.lastWake = time.Now()
	case killAfter:
		s.kill(s.proc)
		s.logf("[%s] paused processor SIGKILLed after the deletion returned", sc.name)
		s.proc = s.startProcessor("processor (fresh, after the kill)")
		s.lastWake = time.Now()
	case noPause:
		if sc.then != nil {
			sc.then()
		}
	case zombie:
		// The zombie resumes only once the other processor has taken its partitions over
		// (the bystander, on the victim's partition, is stored again), however long that takes
		// past its session.
		took, ok := s.awaitFlow(byAtPause, 90*time.Second)
		if ok {
			s.logf("[%s] processor 2 stores the bystander's events %s after the deletion returned (it holds the victim's partition)", sc.name, took.Round(100*time.Millisecond))
		} else {
			s.logf("[%s] processor 2 stored nothing of the bystander within 90 s: no takeover seen", sc.name)
		}
		s.signal(s.proc, syscall.SIGCONT)
		s.logf("[%s] processor 1 (the zombie) SIGCONTed", sc.name)
		s.lastWake = time.Now()
	}
	if s.stalled {
		s.logf("[%s] (the processor stores nothing any more since an earlier deletion)", sc.name)
	} else if took, ok := s.awaitFlow(s.stored(s.bystander), 45*time.Second); ok {
		s.logf("[%s] the bystander's events are stored again (%s after the deletion returned and the role was resumed or restarted)", sc.name, took.Round(100*time.Millisecond))
	} else {
		s.stalled = true
		s.t.Errorf("FINDING [%s] the pipeline stopped: the bystander %s (on the victim's raw partition) has had no event stored for 45 s after the deletion of %s returned and the processor was resumed or restarted (its events keep coming; %d stored of %d produced); the processor's last lines:\n%s",
			sc.name, s.bystander, victim, s.stored(s.bystander), s.prod.count(s.bystander), tail(s.proc.out, 15))
	}
	return r
}

// ---- the end: settle, count, sweep ----

// finish stops the flow, waits until the processor has caught up with the raw topic and until
// every role has run drSettle past its last resumption, then counts every victim's rows
// everywhere; then runs 'shukei retention run' and counts again, checking its audit.
func (s *drStack) finish() {
	s.t.Helper()
	t := s.t
	// A few more seconds of flow after the last scenario, then the producer stops.
	time.Sleep(2 * time.Second)
	s.prod.halt()
	if len(s.prod.errs) > 0 {
		s.logf("producer: %d writes failed (not counted as produced): %s", len(s.prod.errs), s.prod.errs[0])
	}
	// Caught up: every partition's last raw offset is stored or refused (a deleted tenant's
	// stored rows went with it, so the offsets are not counted, only how far each partition
	// got), and every event of the bystander is stored.
	end := s.endOffsets(s.raw, s.rawParts)
	caught := false
	deadline := time.Now().Add(2 * time.Minute)
	if s.stalled {
		deadline = time.Now().Add(20 * time.Second) // it stopped long ago (reported)
	}
	var by uint64
	var behind []string
	for time.Now().Before(deadline) {
		behind = nil
		reached, err := s.reached()
		for p, o := range end {
			if o > 0 && (err != nil || reached[p] < o-1) {
				behind = append(behind, fmt.Sprintf("partition %d at %d of %d", p, reached[p], o-1))
			}
		}
		by, _ = s.storedQuiet(s.bystander)
		if err == nil && len(behind) == 0 && by >= uint64(s.prod.count(s.bystander)) {
			caught = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	sort.Strings(behind)
	s.logf("processor caught up with the raw topic: %v (behind: %s; bystander %d of %d events stored)", caught, strings.Join(behind, ", "), by, s.prod.count(s.bystander))
	if !caught {
		t.Errorf("the processor did not catch up with the raw topic within 2 minutes (%s; bystander %d of %d stored): the final count would prove little; processor's last lines:\n%s",
			strings.Join(behind, ", "), by, s.prod.count(s.bystander), tail(s.proc.out, 20))
	}
	if by != uint64(s.prod.count(s.bystander)) {
		t.Errorf("the bystander %s: %d events stored of the %d produced: the deletions of the victims took the bystander's events with them, or the pipeline stopped", s.bystander, by, s.prod.count(s.bystander))
	}
	if wait := drSettle - time.Since(s.lastWake); wait > 0 {
		s.logf("waiting %s more: every role runs %s past its last resumption or restart", wait.Round(100*time.Millisecond), drSettle)
		time.Sleep(wait)
	}
	for _, p := range append([]*proc{s.proc, s.agg}, s.others...) {
		if p != nil && !p.running() {
			t.Errorf("%s exited (%v):\n%s", p.name, p.err, tail(p.out, 20))
		}
	}

	// The final count, every victim, every table.
	final := s.tenantRows(s.victims...)
	for _, r := range s.results {
		if r.skipped {
			continue
		}
		r.final = final[r.victim]
		r.strayStrings = s.strayStrings(r.victim)
		for tb, n := range r.final {
			if n == 0 {
				continue
			}
			_, rows, err := readAll(context.Background(), s.conn, "SELECT * FROM "+drIdent(tb)+" WHERE toString(tenant_id) = '"+r.victim+"' LIMIT 5")
			if err != nil {
				r.arrived = append(r.arrived, fmt.Sprintf("%s: read: %v", tb, err))
			}
			for _, row := range rows {
				r.arrived = append(r.arrived, tb+": "+cut(strings.Join(row, " | "), 400))
			}
		}
		if ids := s.eventIDRows(s.prod.eventIDs(r.victim)); len(ids) > 0 {
			s.logf("[%s] information: tables holding event ids of the victim (no tenant id): %s", r.scenario, drFmt(ids))
		}
	}
	var checked []string
	for _, tb := range s.tables() {
		if _, ok := tb.cols["tenant_id"]; ok && !s.isAuditLog(tb) {
			checked = append(checked, tb.String())
		}
	}
	s.logf("final count done: %d tables with a tenant_id column counted (%s), every string column of every table but the audit log scanned for the victims' ids", len(checked), strings.Join(checked, ", "))

	// The audit log keeps each deletion (a receipt naming the tenant).
	audit, haveAudit := s.auditLog()
	for _, r := range s.results {
		if !r.skipped && haveAudit && s.auditMentions(audit, r.victim) == 0 {
			t.Errorf("[%s] promise 8: no record of the audit log names the deleted tenant %s (the audit log keeps the deletion itself)", r.scenario, r.victim)
		}
	}

	// Stop the roles (each ran drSettle past its last resumption), then retention sweeps.
	for _, p := range append([]*proc{s.proc, s.agg}, s.others...) {
		if p != nil {
			s.stop(p)
		}
	}
	var auditBefore uint64
	if haveAudit {
		auditBefore = s.count("SELECT count() FROM " + audit.ident())
	}
	out, err := s.tryCLI("retention", "run")
	if err != nil {
		t.Errorf("'shukei retention run' failed: %v\n%s", err, tailText(out, 12))
	}
	s.logf("'shukei retention run': %v; last line: %s", err, drLast(out))
	after := s.tenantRows(s.victims...)
	var swept uint64
	for _, r := range s.results {
		if r.skipped {
			continue
		}
		r.afterRetention = after[r.victim]
		for _, n := range r.final {
			swept += n
		}
	}
	if haveAudit {
		auditAfter := s.count("SELECT count() FROM " + audit.ident())
		var sweepRecords []string
		if auditAfter > auditBefore {
			_, rows, err := readAll(context.Background(), s.conn, "SELECT * FROM "+audit.ident()+" ORDER BY seq LIMIT 1000 OFFSET "+fmt.Sprint(auditBefore))
			if err != nil {
				t.Errorf("harness: read the audit log's new records: %v", err)
			}
			for _, row := range rows {
				sweepRecords = append(sweepRecords, cut(strings.Join(row, " | "), 400))
			}
		}
		s.logf("the audit log grew by %d record(s) during 'shukei retention run': %s", auditAfter-auditBefore, strings.Join(sweepRecords, "\n    "))
		if swept > 0 && auditAfter == auditBefore {
			t.Errorf("promise 8 (every 'shukei retention run' ... audits the sweep): the run had %d rows of deleted tenants to sweep and appended no record to the audit log", swept)
		}
	}
	for _, r := range s.results {
		if r.skipped {
			continue
		}
		v := r.victim
		// Information: what Shukei's own check says (its table list is the operator's).
		o, err := s.tryCLI("retention", "verify", "--tenant", v)
		summary := drLast(o)
		for _, l := range strings.Split(o, "\n") {
			if strings.Contains(l, " left in ") {
				summary = strings.TrimSpace(l)
			}
		}
		s.logf("'shukei retention verify --tenant %s' (%v): %s", v, err, summary)
	}
	// Information: how often the roles said a deleted tenant's batch was in flight (the
	// attacks reached that path).
	s.mu.Lock()
	var said []string
	for _, o := range s.outputs {
		if strings.HasPrefix(o.name, "shukei ") {
			continue
		}
		n := 0
		for _, l := range strings.Split(o.out.String(), "\n") {
			if strings.Contains(l, "deleted") {
				n++
			}
		}
		said = append(said, fmt.Sprintf("%s: %d", o.name, n))
	}
	s.mu.Unlock()
	s.logf("log lines of the roles mentioning a deletion: %s", strings.Join(said, "; "))
	s.dlqInfo()
	s.report()
	s.plantAndSweep(audit, haveAudit)
}

// dlqInfo reports, for information, DLQ records naming a victim (promise 8 speaks of tables;
// the README says a deleted tenant's refused events keep no tenant id).
func (s *drStack) dlqInfo() {
	msgs := s.readDLQ()
	n := map[string]int{}
	for _, m := range msgs {
		for _, v := range s.victims {
			if strings.Contains(string(m.Key), v) || strings.Contains(string(m.Value), v) {
				n[v]++
			}
		}
	}
	s.logf("information: %d DLQ records; records naming a victim: %v", len(msgs), n)
}

// plantAndSweep attacks the limit's remedy: "every 'shukei retention run' sweeps rows of
// deleted tenants away, and audits the sweep". The administrator plants what the limit lets
// through — rows of a deleted tenant in the event store (whose views fill the purpose marts)
// and in the aggregator's tables (copies of the bystander's rows with the victim's tenant id) —
// and runs 'shukei retention run': afterwards no table but the audit log may hold a row of the
// victim, and the audit log must have a new record of the sweep.
func (s *drStack) plantAndSweep(audit drTable, haveAudit bool) {
	t := s.t
	victim := s.victims[0]
	var planted []string
	for _, tb := range s.tables() {
		if _, ok := tb.cols["tenant_id"]; !ok || strings.HasPrefix(tb.name, ".inner") {
			continue
		}
		if !(tb.db == s.db && tb.name == "events") && tb.db != s.db+"_aggregator" {
			continue
		}
		var sel, cols []string
		for _, c := range tb.order {
			cols = append(cols, quoteIdent(c))
			if c == "tenant_id" {
				sel = append(sel, "'"+victim+"'")
			} else {
				sel = append(sel, quoteIdent(c))
			}
		}
		q := "INSERT INTO " + tb.ident() + " (" + strings.Join(cols, ", ") + ") SELECT " + strings.Join(sel, ", ") + " FROM " + tb.ident() + " WHERE toString(tenant_id) = '" + s.bystander + "' LIMIT 5"
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.conn.Exec(ctx, q)
		cancel()
		if err != nil {
			t.Errorf("harness: plant rows of the deleted tenant in %s: %v", tb, err)
			continue
		}
		planted = append(planted, tb.String())
	}
	rows := s.rowsOf(victim)
	s.logf("[sweep] planted rows of the deleted tenant %s in %s; now: %s", victim, strings.Join(planted, ", "), drFmt(rows))
	if rows[s.db+".events"] == 0 {
		t.Errorf("[sweep] harness: no planted row of the deleted tenant in %s.events: the sweep attack would be vacuous", s.db)
		return
	}
	var before uint64
	if haveAudit {
		before = s.count("SELECT count() FROM " + audit.ident())
	}
	out, err := s.tryCLI("retention", "run")
	if err != nil {
		t.Errorf("[sweep] 'shukei retention run' failed: %v\n%s", err, tailText(out, 12))
	}
	s.logf("[sweep] 'shukei retention run': %v; last line: %s", err, drLast(out))
	after := s.rowsOf(victim)
	var left []string
	for tb, n := range after {
		left = append(left, fmt.Sprintf("%s: %d of %d planted/derived rows", tb, n, rows[tb]))
	}
	sort.Strings(left)
	if len(left) > 0 {
		t.Errorf("FINDING, promise 8 (every 'shukei retention run' sweeps rows of deleted tenants away): rows of the deleted tenant %s left after the run:\n  %s", victim, strings.Join(left, "\n  "))
	}
	if stray := s.strayStrings(victim); len(stray) > 0 {
		t.Errorf("FINDING, promise 8: after the sweep the deleted tenant's id %s is still in: %s", victim, strings.Join(stray, ", "))
	}
	if !haveAudit {
		return
	}
	grew := s.count("SELECT count() FROM "+audit.ident()) - before
	var recs []string
	if grew > 0 {
		_, rs, err := readAll(context.Background(), s.conn, "SELECT * FROM "+audit.ident()+" ORDER BY seq LIMIT 100 OFFSET "+fmt.Sprint(before))
		if err != nil {
			t.Errorf("harness: read the audit log's new records: %v", err)
		}
		for _, r := range rs {
			recs = append(recs, cut(strings.Join(r, " | "), 500))
		}
	}
	s.logf("[sweep] the audit log grew by %d record(s):\n    %s", grew, strings.Join(recs, "\n    "))
	if grew == 0 {
		t.Errorf("FINDING, promise 8 (every 'shukei retention run' ... audits the sweep): the run swept rows of the deleted tenant %s (%s) and appended no record to the audit log", victim, drFmt(rows))
	}
}

// auditLog is the audit log's table, if there is one.
func (s *drStack) auditLog() (drTable, bool) {
	for _, tb := range s.tables() {
		if s.isAuditLog(tb) {
			return tb, true
		}
	}
	s.t.Errorf("harness: no audit_log table in %s_audit or %s", s.db, s.db)
	return drTable{}, false
}

// auditMentions counts the audit log's records naming a tenant in any string column.
func (s *drStack) auditMentions(audit drTable, tenant string) uint64 {
	var conds []string
	for c, typ := range audit.cols {
		if strings.Contains(typ, "String") && !strings.HasPrefix(typ, "Array(") {
			conds = append(conds, fmt.Sprintf("position(toString(%s), '%s') > 0", quoteIdent(c), tenant))
		}
	}
	if len(conds) == 0 {
		return 0
	}
	return s.count("SELECT count() FROM " + audit.ident() + " WHERE " + strings.Join(conds, " OR "))
}

func (s *drStack) count(q string) uint64 {
	s.t.Helper()
	var n uint64
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.conn.QueryRow(ctx, q).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// report judges and prints every scenario: rows of the victim after its deletion returned
// (at once, after everything settled, after retention) are findings.
func (s *drStack) report() {
	t := s.t
	var lines []string
	for _, r := range s.results {
		if r.skipped {
			lines = append(lines, fmt.Sprintf("[%s] victim %s: not run (the processor had stopped storing anything after an earlier deletion)", r.scenario, r.victim))
			continue
		}
		var tables []string
		seen := map[string]bool{}
		for _, m := range []map[string]uint64{r.before, r.afterReturn, r.final, r.afterRetention} {
			for tb := range m {
				if !seen[tb] {
					seen[tb] = true
					tables = append(tables, tb)
				}
			}
		}
		sort.Strings(tables)
		lines = append(lines, fmt.Sprintf("[%s] victim %s: %d events not yet stored at the pause; 'tenants delete' took %s", r.scenario, r.victim, r.inFlight, r.deleteTook.Round(time.Millisecond)))
		lines = append(lines, "    table: before deletion → when it returned → final → after retention run")
		for _, tb := range tables {
			lines = append(lines, fmt.Sprintf("    %s: %d → %d → %d → %d", tb, r.before[tb], r.afterReturn[tb], r.final[tb], r.afterRetention[tb]))
		}
		var bad []string
		for _, tb := range tables {
			if r.afterReturn[tb] > 0 {
				bad = append(bad, fmt.Sprintf("%s holds %d row(s) of the victim when 'shukei tenants delete' returned (it checks nothing is left before it returns)", tb, r.afterReturn[tb]))
			}
			if r.final[tb] > r.afterReturn[tb] || (r.final[tb] > 0 && r.afterReturn[tb] == 0) {
				bad = append(bad, fmt.Sprintf("%s: %d row(s) of the victim ARRIVED after 'shukei tenants delete' returned (%d when it returned, %d after %s of settling)", tb, r.final[tb]-min(r.final[tb], r.afterReturn[tb]), r.afterReturn[tb], r.final[tb], drSettle))
			}
			if r.afterRetention[tb] > 0 {
				bad = append(bad, fmt.Sprintf("%s still holds %d row(s) of the victim after 'shukei retention run' (every run sweeps rows of deleted tenants away)", tb, r.afterRetention[tb]))
			}
		}
		if len(r.strayStrings) > 0 {
			bad = append(bad, "the victim's id is still in string columns of: "+strings.Join(r.strayStrings, ", "))
		}
		if len(r.arrived) > 0 {
			bad = append(bad, "the rows found (all columns):\n    "+strings.Join(r.arrived, "\n    "))
		}
		if len(bad) > 0 {
			t.Errorf("FINDING, promise 8 (once 'shukei tenants delete' has returned, no row of the tenant arrives in any table afterwards) — scenario %s, victim %s:\n  %s\n  timeline:\n    %s",
				r.scenario, r.victim, strings.Join(bad, "\n  "), strings.Join(r.timeline, "\n    "))
		}
	}
	t.Logf("deletion race, stack %s, %s in all:\n  %s", s.db, time.Since(s.began).Round(time.Second), strings.Join(lines, "\n  "))
}

// drIdent quotes "database.table" as an identifier.
func drIdent(tb string) string {
	d, n, _ := strings.Cut(tb, ".")
	return quoteIdent(d) + "." + quoteIdent(n)
}

// drFmt prints table → rows, sorted.
func drFmt(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// waitRows waits until every victim has rows in the event store (and, with withAgg, in some
// table of <db>_aggregator), so no deletion is vacuous.
func (s *drStack) waitRows(withAgg bool, limit time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		rows := s.tenantRows(s.victims...)
		ready := true
		for _, v := range s.victims {
			if rows[v][s.db+".events"] == 0 {
				ready = false
			}
			if withAgg {
				agg := false
				for tb := range rows[v] {
					if strings.HasPrefix(tb, s.db+"_aggregator.") {
						agg = true
					}
				}
				ready = ready && agg
			}
		}
		if ready {
			s.logf("every victim has rows: %s", drFmt(rows[s.victims[0]]))
			return
		}
		if time.Now().After(deadline) {
			var parts []string
			for _, v := range s.victims {
				parts = append(parts, v+": "+drFmt(rows[v]))
			}
			s.logf("not every victim has the rows awaited after %s: %s", limit, strings.Join(parts, "; "))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- the attacks ----

// TestDeletionRace runs the attacks at once, each on a stack of its own (subtests started
// together, so that -parallel does not serialise them: each spends most of its time waiting
// for deletions, windows and timeouts).
func TestDeletionRace(t *testing.T) {
	t.Parallel()
	attacks := []struct {
		name string
		run  func(*testing.T)
	}{
		{"ProcessorPausedAndResumed", drAttackProcessorPausedAndResumed},
		{"ProcessorKilled", drAttackProcessorKilled},
		{"ProcessorResumedDuring", drAttackProcessorResumedDuring},
		{"Aggregator", drAttackAggregator},
		{"ContentFromVictim", drAttackContentInFlight(contentFromVictims)},
		{"ContentFromBystander", drAttackContentInFlight(contentFromBystander)},
		{"ContentFromAll", drAttackContentInFlight(contentFromAll)},
	}
	began := time.Now()
	var wg sync.WaitGroup
	for _, a := range attacks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(a.name, a.run)
		}()
	}
	wg.Wait()
	t.Logf("the deletion race attacks took %s", time.Since(began).Round(time.Second))
}

// drAttackProcessorPausedAndResumed: the processor is stopped (SIGSTOP) right after
// the victim's burst was acknowledged, 100 ms, 500 ms and 900 ms later (inside a batch of
// processor.batch_timeout = 1 s), and 1.5 s later (past it: while inserting or committing);
// the victim is deleted; the processor is resumed only after the deletion returned.
func drAttackProcessorPausedAndResumed(t *testing.T) {
	scs := []drScenario{
		{name: "paused 0ms after the burst, resumed after the delete", how: resumeAfter, offset: 0},
		{name: "paused 100ms, resumed after", how: resumeAfter, offset: 100 * time.Millisecond},
		{name: "paused 500ms, resumed after", how: resumeAfter, offset: 500 * time.Millisecond},
		{name: "paused 900ms, resumed after", how: resumeAfter, offset: 900 * time.Millisecond},
		{name: "paused 1500ms, resumed after", how: resumeAfter, offset: 1500 * time.Millisecond},
	}
	s := newDRStack(t, len(scs), false, contentFromVictims)
	s.proc = s.startProcessor("processor")
	s.waitRows(false, 60*time.Second)
	for i, sc := range scs {
		s.runProcessorScenario(sc, s.victims[i])
	}
	s.finish()
}

// drAttackProcessorKilled: the processor is stopped mid-batch and SIGKILLed — after
// the deletion returned (a fresh processor then starts), or halfway through the deletion (a
// fresh processor starting at once, while the deletion still runs).
func drAttackProcessorKilled(t *testing.T) {
	scs := []drScenario{
		{name: "paused 100ms, killed after the delete, fresh processor", how: killAfter, offset: 100 * time.Millisecond},
		{name: "paused 900ms, killed after the delete, fresh processor", how: killAfter, offset: 900 * time.Millisecond},
		{name: "paused 500ms, killed 2s into the delete, fresh processor at once", how: killDuring, offset: 500 * time.Millisecond, during: 2 * time.Second},
		{name: "paused 300ms, killed 8s into the delete, fresh processor at once", how: killDuring, offset: 300 * time.Millisecond, during: 8 * time.Second},
	}
	s := newDRStack(t, len(scs), false, contentFromVictims)
	s.proc = s.startProcessor("processor")
	s.waitRows(false, 60*time.Second)
	for i, sc := range scs {
		s.runProcessorScenario(sc, s.victims[i])
	}
	s.finish()
}

// drAttackProcessorResumedDuring: the processor is stopped mid-batch and resumed while
// the deletion runs (1 s in, and 8 s in); and a zombie: the stopped processor loses its
// partitions to a second one, the victim is deleted, and the stopped one resumes with the
// victim's events it had decided before.
func drAttackProcessorResumedDuring(t *testing.T) {
	scs := []drScenario{
		{name: "paused 500ms, resumed 1s into the delete", how: resumeDuring, offset: 500 * time.Millisecond, during: time.Second},
		{name: "paused 900ms, resumed 8s into the delete", how: resumeDuring, offset: 900 * time.Millisecond, during: 8 * time.Second},
		{name: "paused 700ms, a second processor takes over, the zombie resumes after the delete", how: zombie, offset: 700 * time.Millisecond},
	}
	s := newDRStack(t, len(scs), false, contentFromVictims)
	s.proc = s.startProcessor("processor")
	s.waitRows(false, 60*time.Second)
	for i, sc := range scs {
		s.runProcessorScenario(sc, s.victims[i])
	}
	s.finish()
}

// drAttackAggregator: the aggregator (one-minute base windows, weeks and months
// released, so that each closed window keeps every tenant's raw material with its tenant_id)
// is stopped 1.2 s past a window's end — allowed_lateness is 1 s, so it is closing that window
// and writing its per-tenant rows — the victim is deleted (the processor keeps running: this
// deletion also races a live processor), and the aggregator is resumed once the deletion
// returned; it must then close the next window, which holds the victim's events it read before
// the deletion, without them. Then it is stopped mid-window, a second victim is deleted, and
// it is SIGKILLed and a fresh aggregator started (which re-reads the open windows from Kafka).
func drAttackAggregator(t *testing.T) {
	s := newDRStack(t, 2, true, contentFromVictims)
	s.proc = s.startProcessor("processor")
	s.agg = s.startAggregator("aggregator")
	s.waitRows(true, 75*time.Second)

	// 1. Stopped as a window closes, resumed after the deletion.
	name := "aggregator stopped 1.2s past a window's end (closing it), resumed after the delete"
	r := &drResult{scenario: name, victim: s.victims[0]}
	mark := s.mark()
	end := time.Now().Truncate(drWindow).Add(drWindow)
	time.Sleep(time.Until(end.Add(1200 * time.Millisecond)))
	s.signal(s.agg, syscall.SIGSTOP)
	s.logf("[%s] aggregator (pid %d) SIGSTOPped %s past the window end %s", name, s.agg.cmd.Process.Pid, time.Since(end).Round(time.Millisecond), end.UTC().Format("15:04:05"))
	s.deleteAround(drScenario{name: name, how: noPause, then: func() {
		s.signal(s.agg, syscall.SIGCONT)
		s.lastWake = time.Now()
		s.logf("[%s] aggregator SIGCONTed after the deletion returned", name)
	}}, r, s.victims[0])
	s.closedAgain(name, end.Add(drWindow+time.Second))
	s.record(r, mark)

	// 2. Stopped mid-window, killed after the deletion, a fresh aggregator.
	name = "aggregator stopped mid-window, killed after the delete, fresh aggregator"
	r = &drResult{scenario: name, victim: s.victims[1]}
	mark = s.mark()
	time.Sleep(time.Second)
	s.signal(s.agg, syscall.SIGSTOP)
	s.logf("[%s] aggregator (pid %d) SIGSTOPped %s into its window", name, s.agg.cmd.Process.Pid, time.Since(time.Now().Truncate(drWindow)).Round(time.Millisecond))
	s.deleteAround(drScenario{name: name, how: noPause, then: func() {
		s.kill(s.agg)
		s.logf("[%s] paused aggregator SIGKILLed after the deletion returned", name)
		s.agg = s.startAggregator("aggregator (fresh, after the kill)")
		s.lastWake = time.Now()
	}}, r, s.victims[1])
	s.closedAgain(name, time.Now().Truncate(drWindow).Add(drWindow+time.Second))
	s.record(r, mark)
	s.finish()
}

// aggRows is how many rows of the bystander the aggregator's database holds.
func (s *drStack) aggRows() uint64 {
	var n uint64
	for tb, c := range s.rowsOf(s.bystander) {
		if strings.HasPrefix(tb, s.db+"_aggregator.") {
			n += c
		}
	}
	return n
}

// closedAgain waits until the aggregator writes per-tenant rows of the bystander again after
// the window ending at end (plus allowed_lateness) has closed — so the window holding the
// victim's events read before the deletion was closed after the deletion. When that moment
// has passed already, the next window's close is awaited.
func (s *drStack) closedAgain(name string, end time.Time) {
	time.Sleep(3 * time.Second) // a close it was in the middle of is finished by now
	if time.Now().After(end) {
		end = time.Now().Truncate(drWindow).Add(drWindow + time.Second)
	}
	base := s.aggRows()
	deadline := end.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		n := s.aggRows()
		if n > base && !time.Now().After(end) {
			base = n // an earlier window's rows: wait for the one ending at end
		} else if n > base {
			s.logf("[%s] the aggregator closed the window ending %s: the bystander's per-tenant rows grew %d → %d", name, end.Add(-time.Second).UTC().Format("15:04:05"), base, n)
			return
		}
		time.Sleep(time.Second)
	}
	s.t.Errorf("FINDING [%s] the aggregator stopped: it wrote no per-tenant row of the bystander by %s (the window ending %s should have closed %s after it ended); its last lines:\n%s",
		name, deadline.UTC().Format("15:04:05"), end.Add(-time.Second).UTC().Format("15:04:05"), time.Second, tail(s.agg.out, 15))
}

// record keeps a scenario's result with its part of the timeline.
func (s *drStack) record(r *drResult, mark int) {
	s.tlMu.Lock()
	r.timeline = append([]string(nil), s.timeline[mark:]...)
	s.tlMu.Unlock()
	s.results = append(s.results, r)
}

// drAttackContentInFlight: nothing is paused. Events carrying content (refused; while the
// tenant is registered their refusals keep its tenant id, README) come from every tenant, from
// the victim only, or from the bystander only; the processor and the aggregator run
// undisturbed, and the victim is deleted: no row of it may arrive afterwards, the bystander's
// events must still be stored and the aggregator must still close its windows.
func drAttackContentInFlight(content drContent) func(t *testing.T) {
	return func(t *testing.T) {
		s := newDRStack(t, 1, true, content)
		s.proc = s.startProcessor("processor")
		s.agg = s.startAggregator("aggregator")
		s.waitRows(true, 75*time.Second)
		name := map[drContent]string{
			contentFromAll:       "nothing paused; every tenant also sends refused (content) events",
			contentFromVictims:   "nothing paused; only the victim also sends refused (content) events",
			contentFromBystander: "nothing paused; only the bystander (not deleted) also sends refused (content) events",
		}[content]
		r := &drResult{scenario: name, victim: s.victims[0]}
		mark := s.mark()
		// The deletion starts 2 s into a window and returns (after about 20 s) well before
		// that window closes: the aggregator holds the victim's events of those seconds when
		// the deletion begins.
		end := time.Now().Truncate(drWindow).Add(drWindow)
		time.Sleep(time.Until(end.Add(2 * time.Second)))
		s.logf("[%s] the deletion starts 2 s into the window %s–%s", name, end.UTC().Format("15:04:05"), end.Add(drWindow).UTC().Format("15:04:05"))
		s.deleteAround(drScenario{name: name, how: noPause}, r, s.victims[0])
		s.closedAgain(name, end.Add(drWindow+time.Second))
		s.record(r, mark)
		s.finish()
	}
}
