package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/ledger"
	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/group"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// Purpose is the purpose whose releases this package makes and whose budget it spends.
const Purpose = "external_aggregate"

// Aggregator is one instance of the aggregator role.
type Aggregator struct {
	cfg        config.Aggregator
	kcfg       config.Kafka
	limits     event.Limits
	store      *store
	cache      *registry.Cache
	keyring    *pseudonym.Keyring
	policy     decision.Tagger
	hashKey    []byte
	sampleKey  []byte
	plan       *Plan // the base plan: what is accumulated, bounded and stored per base window
	planHash   string
	kinds      []releaseKind // what is released: base windows, weeks, months
	ledger     *ledger.Ledger
	rlog       *releaseLog
	budget     ledger.Budget // per calendar month
	yearBudget ledger.Budget // per rolling year
	log        *slog.Logger
	m          *metrics
	now        func() time.Time

	refusedMu sync.Mutex
	refused   map[spanKey]bool // windows whose refusal was already counted and logged

	afterDraw func() // tests: called between drawing a release and writing it to the log

	sealer *Sealer // seals the weeks' gated atoms in the release step; nil without a k
}

// Deps are the aggregator's collaborators; main owns them.
type Deps struct {
	Conn driver.Conn
	// Marts reads the purpose marts the sealer computes atoms from (the aggregator's read-only
	// user, promise 16); Conn when nil.
	Marts    driver.Conn
	Database string
	Cache    *registry.Cache
	Keyring  *pseudonym.Keyring
	Policy   decision.Tagger
	HashKey  []byte
	// SampleKey keys the choice of cells kept for a tenant over L0 (derive it from the
	// master key): reproducible on replay, unpredictable without the key.
	SampleKey []byte
	Plan      *Plan
	// Budget is external_aggregate's (ε, δ) per calendar month.
	Budget ledger.Budget
	// YearBudget is its (ε, δ) over any 365 days of windows; zero means twelve months' worth.
	YearBudget ledger.Budget
	Registry   prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock (event-time watermark of caught-up partitions, the decision's now);
	// nil means time.Now.
	Now func() time.Time
	// LedgerKey keys the budget ledger's chain (ledger.key_file); nil: unkeyed, refused once
	// the chain holds a keyed entry.
	LedgerKey []byte
	// K is the fewest tenants in a gated atom (the policy's k, or a larger query.k): the
	// release step seals every week's atoms with it (seal.go). 0: no sealing.
	K int
}

// New builds an aggregator. It refuses a plan whose one release would cost more than the
// month's or the year's budget: every such release would be refused.
func New(cfg config.Config, d Deps) (*Aggregator, error) {
	kinds, err := d.Plan.kinds(cfg.Aggregator.Epsilon, cfg.Aggregator.WeekEpsilon, cfg.Aggregator.MonthEpsilon)
	if err != nil {
		return nil, err
	}
	if len(kinds) == 0 {
		return nil, fmt.Errorf("aggregator: aggregator.epsilon, week_epsilon and month_epsilon are all 0: nothing would be released")
	}
	year := yearBudget(d.Budget, d.YearBudget)
	var hashes []string
	for _, k := range kinds {
		eps, delta := k.plan.Cost()
		for _, b := range []struct {
			name string
			b    ledger.Budget
		}{{"monthly", d.Budget}, {"rolling-year", year}} {
			if eps > b.b.Epsilon+1e-9 || delta > b.b.Delta+1e-15 {
				return nil, fmt.Errorf("aggregator: one %s release costs ε=%g δ=%g but the %s budget of %s is ε=%g δ=%g; lower its ε or raise the budget",
					k.period, eps, delta, b.name, Purpose, b.b.Epsilon, b.b.Delta)
			}
		}
		hashes = append(hashes, k.hash)
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	h := d.Plan.Hash()
	st := &store{conn: d.Conn, db: d.Database, plan: h, plans: hashes}
	rlog := newReleaseLog(cfg.Kafka.Brokers, topic.ReleaseSpec(cfg.Kafka), d.Database)
	var sealer *Sealer
	if d.K > 0 {
		sealer = newSealer(d.Conn, d.Database, rlog, d.K, cfg.Aggregator.SealAfter, d.Registry, d.Log, time.Now).ReadMartsWith(d.Marts).onCluster(cfg.ClickHouse.Cluster)
	}
	a := &Aggregator{
		sealer:     sealer,
		cfg:        cfg.Aggregator,
		kcfg:       cfg.Kafka,
		limits:     cfg.EventLimits(),
		store:      st,
		kinds:      kinds,
		cache:      d.Cache,
		keyring:    d.Keyring,
		policy:     d.Policy,
		hashKey:    d.HashKey,
		sampleKey:  d.SampleKey,
		plan:       d.Plan,
		planHash:   h,
		ledger:     ledger.New(d.Conn, d.Database).WithKey(d.LedgerKey),
		rlog:       rlog,
		budget:     d.Budget,
		yearBudget: year,
		log:        d.Log,
		m:          newMetrics(d.Registry),
		now:        now,
		refused:    map[spanKey]bool{},
	}
	st.keep = a.withoutDeleted
	return a, nil
}

// YearBudgetOf is external_aggregate's rolling-year budget under configuration c, given its
// monthly budget: the configured one, or twelve months' worth (ops.YearBudgetOf, which the
// query service uses too).
func YearBudgetOf(c config.Aggregator, month ledger.Budget) ledger.Budget {
	return ops.YearBudgetOf(c, month)
}

func yearBudget(month, year ledger.Budget) ledger.Budget { return ops.YearBudget(month, year) }

// PlanHash identifies the plan in partials, releases and ledger entries.
func (a *Aggregator) PlanHash() string { return a.planHash }

// Run joins the consumer group and aggregates until ctx ends.
func (a *Aggregator) Run(ctx context.Context) error {
	defer a.rlog.close()
	return group.Run(ctx, group.Config{ID: a.cfg.GroupID, Brokers: a.kcfg.Brokers, Topic: a.kcfg.RawTopic, MaxBackoff: a.cfg.MaxBackoff},
		group.StandardHooks("aggregator", a.log, a.m.kafkaErrors, a.m.assigned), a.runGeneration)
}

// partState is one assigned partition's windows.
type partState struct {
	id       int
	closed   time.Time
	high     int64 // offsets below it were read before the last close
	next     int64 // next offset to read; -1 until the first message
	maxEvent time.Time
	caught   bool
	open     map[int64]*Acc
}

type fetched struct {
	part   int
	msg    kafka.Message
	lag    int64
	err    error
	onlyUp bool // a lag report without a message
}

func (a *Aggregator) runGeneration(ctx context.Context, gen *kafka.Generation, parts []int) error {
	parts = slices.Sorted(slices.Values(parts))
	var wg sync.WaitGroup
	defer wg.Wait()
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if slices.Contains(parts, 0) {
		a.m.releaser.Set(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.m.releaser.Set(0)
			a.releaseLoop(gctx)
		}()
	}
	if len(parts) == 0 {
		<-gctx.Done()
		return nil
	}
	var prog map[int]progress
	if err := a.retry(gctx, "read progress", func() error {
		var err error
		prog, err = a.store.loadProgress(gctx, parts)
		return err
	}); err != nil {
		return err
	}
	states := map[int]*partState{}
	msgs := make(chan fetched, 1024)
	for _, p := range parts {
		pr, ok := prog[p]
		st := &partState{id: p, next: -1, open: map[int64]*Acc{}, high: -1}
		start := int64(kafka.FirstOffset)
		if ok {
			st.closed, st.high, start = pr.closed.UTC(), pr.high, pr.resume
			a.m.closedThrough.WithLabelValues(strconv.Itoa(p)).Set(float64(st.closed.Unix()))
		}
		if start >= 0 {
			st.next = start
		}
		states[p] = st
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: a.kcfg.Brokers, Topic: a.kcfg.RawTopic, Partition: p,
			MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond,
		})
		if err := r.SetOffset(start); err != nil {
			_ = r.Close()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			send := func(f fetched) bool {
				select {
				case msgs <- f:
					return true
				case <-gctx.Done():
					return false
				}
			}
			// Whether the partition is caught up decides whether its watermark may reach now,
			// so an empty partition needs this answer before any message.
			for {
				lag, err := r.ReadLag(gctx)
				if err == nil {
					if !send(fetched{part: p, lag: lag, onlyUp: true}) {
						return
					}
					break
				}
				a.m.kafkaErrors.Inc()
				select {
				case <-gctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			for {
				m, err := r.ReadMessage(gctx)
				if gctx.Err() != nil {
					return
				}
				if !send(fetched{part: p, msg: m, lag: r.Lag(), err: err}) || err != nil {
					return
				}
			}
		}()
	}

	tick := time.NewTicker(min(time.Second, a.cfg.ReleaseInterval))
	defer tick.Stop()
	dctx := a.decisionContext()
	for {
		select {
		case <-gctx.Done():
			return nil
		case f := <-msgs:
			if f.err != nil {
				a.m.kafkaErrors.Inc()
				return fmt.Errorf("read partition %d: %w", f.part, f.err)
			}
			st := states[f.part]
			st.caught = f.lag == 0
			if !f.onlyUp {
				a.add(st, f.msg, dctx)
			}
		case <-tick.C:
			dctx = a.decisionContext()
			open := 0
			for _, p := range parts {
				if err := a.maybeClose(gctx, gen, states[p]); err != nil {
					return err
				}
				open += len(states[p].open)
			}
			a.m.openWindows.Set(float64(open))
		}
	}
}

func (a *Aggregator) decisionContext() *decision.Context {
	return &decision.Context{
		Now: a.now(), Limits: a.limits, Tenants: a.cache.Snapshot(), Keyring: a.keyring, Policy: a.policy, HashKey: a.hashKey,
	}
}

// add runs the shared event decision on one message and adds it to its window.
func (a *Aggregator) add(st *partState, m kafka.Message, dctx *decision.Context) {
	st.next = m.Offset + 1
	t, rej := decision.DecideMessage(m.Key, m.Value, dctx)
	if rej != nil {
		a.m.events.WithLabelValues("rejected").Inc()
		return
	}
	if !policy.Set(t.Purposes).Has(policy.ExternalAggregate) {
		a.m.events.WithLabelValues("not_tagged").Inc()
		return
	}
	w := WindowOf(t.Event.OccurredAt, a.cfg.Window)
	if !w.End.After(st.closed) {
		if m.Offset < st.high {
			a.m.events.WithLabelValues("replayed").Inc()
		} else {
			a.m.events.WithLabelValues("late").Inc()
			a.m.late.Inc()
		}
		return
	}
	if t.Event.OccurredAt.After(st.maxEvent) {
		st.maxEvent = t.Event.OccurredAt
	}
	acc := st.open[w.Start.Unix()]
	if acc == nil {
		acc = a.plan.NewAcc(w)
		st.open[w.Start.Unix()] = acc
	}
	refused := acc.CellsRefused
	if acc.Add(&t, m.Offset) {
		a.m.events.WithLabelValues("added").Inc()
	} else {
		a.m.events.WithLabelValues("duplicate").Inc()
	}
	if n := acc.CellsRefused - refused; n > 0 {
		a.m.cellsRefused.Add(float64(n))
	}
}

// maybeClose closes every window of the partition that the watermark has passed by the
// allowed lateness: their partials and the partition's progress are stored in one insert.
func (a *Aggregator) maybeClose(ctx context.Context, gen *kafka.Generation, st *partState) error {
	wm := st.maxEvent
	if now := a.now().UTC(); st.caught && now.After(wm) {
		wm = now // nothing is waiting in the partition: event time has reached now
	}
	if wm.IsZero() {
		return nil
	}
	label := strconv.Itoa(st.id)
	a.m.watermark.WithLabelValues(label).Set(float64(wm.Unix()))
	through := WindowOf(wm.Add(-a.cfg.AllowedLateness), a.cfg.Window).Start
	if !through.After(st.closed) {
		return nil
	}
	var closed []closedWindow
	resume := st.next
	for _, acc := range st.open {
		if acc.W.End.After(through) {
			if resume < 0 || acc.FirstOffset < resume {
				resume = acc.FirstOffset
			}
			continue
		}
		// Every release is drawn from the tenant rows (partialsOf); the partials are the close's
		// bounded summary of this partition, which replays are checked against.
		cw := closedWindow{w: acc.W, tenants: acc.TenantRows()}
		if a.kinds[0].period == PeriodWindow {
			ps, err := acc.Partials(a.sampleKey)
			if err != nil {
				return fmt.Errorf("partials of %v: %w", acc.W, err)
			}
			cw.partials = ps
		}
		closed = append(closed, cw)
	}
	if resume < 0 {
		resume = kafka.FirstOffset // nothing read yet: a restart starts from the beginning
	}
	slices.SortFunc(closed, func(x, y closedWindow) int { return x.w.Start.Compare(y.w.Start) })
	pr := progress{closed: through, resume: resume, high: max(st.next, st.high)}
	now := a.now().UTC().Truncate(time.Second)
	if err := a.retry(ctx, "store partials", func() error {
		return a.store.writeClose(ctx, st.id, closed, pr, now) // without the deleted tenants (store.keep)
	}); err != nil {
		return err
	}
	for _, c := range closed {
		delete(st.open, c.w.Start.Unix())
		a.m.windowsClosed.Inc()
	}
	st.closed, st.high = through, pr.high
	a.m.closedThrough.WithLabelValues(label).Set(float64(through.Unix()))
	if resume >= 0 {
		// Only for lag tooling: the store, not the group offset, decides where to resume.
		if err := gen.CommitOffsets(map[string]map[int]int64{a.kcfg.RawTopic: {st.id: resume}}); err != nil {
			a.m.kafkaErrors.Inc()
			a.log.Warn("committing aggregator offsets failed (progress is stored; continuing)", "err", err)
		}
	}
	return nil
}

// releaseLoop is the release step: run by the instance holding partition 0.
func (a *Aggregator) releaseLoop(ctx context.Context) {
	nparts := 0
	t := time.NewTicker(a.cfg.ReleaseInterval)
	defer t.Stop()
	for {
		// The raw topic's partitions are read every round, not once: partitions added to the
		// live topic hold every window back until they too have closed it (ReleaseDue). A
		// topic never loses partitions, so a failed read keeps the last count.
		if n, err := partitionCount(ctx, a.kcfg); err != nil {
			a.m.kafkaErrors.Inc()
			if nparts == 0 {
				a.log.Warn("reading the raw topic's partitions failed; retrying", "err", err)
			}
		} else {
			nparts = max(nparts, n)
		}
		if nparts > 0 {
			if err := a.ReleaseDue(ctx, nparts); err != nil && ctx.Err() == nil {
				a.m.writeErrors.WithLabelValues("release").Inc()
				a.log.Warn("release step failed; retrying", "err", err)
			}
		}
		if a.sealer != nil {
			if _, err := a.sealer.SealDue(ctx); err != nil && ctx.Err() == nil {
				a.m.writeErrors.WithLabelValues("seal").Inc()
				a.log.Warn("sealing the weeks' gated atoms failed; retrying", "err", err)
			}
		}
		// The budget left this month, also when nothing is due (and after a month turns).
		a.updateBudget(ctx, a.now().UTC().Format("2006-01"))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func partitionCount(ctx context.Context, k config.Kafka) (int, error) {
	var d kafka.Dialer
	conn, err := d.DialContext(ctx, "tcp", k.Brokers[0])
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(k.RawTopic)
	if err != nil {
		return 0, err
	}
	return len(ps), nil
}

// ReleaseDue releases every window — base window, week or month, as configured — that all
// nparts partitions have closed and that has not been released yet, from the earliest window
// with any data on: windows without data are released too (their configured cells, noised),
// so whether a window is released says nothing about any tenant. A partition that has stored
// progress counts even when nparts is older than the partitions added to the topic.
func (a *Aggregator) ReleaseDue(ctx context.Context, nparts int) error {
	closed, err := a.store.closedAll(ctx)
	if err != nil {
		return err
	}
	for p := range closed {
		nparts = max(nparts, p+1)
	}
	if len(closed) < nparts {
		return nil // a partition has not reported yet
	}
	var through time.Time
	for p := range nparts {
		c, ok := closed[p]
		if !ok {
			return nil
		}
		if through.IsZero() || c.Before(through) {
			through = c
		}
	}
	first, ok, err := a.store.firstWindow(ctx)
	if err != nil || !ok {
		return err
	}
	done, err := a.store.releasedWindows(ctx)
	if err != nil {
		return err
	}
	if err := a.rlog.sync(ctx); err != nil {
		return err
	}
	if err := a.materialise(ctx); err != nil {
		return err
	}
	for _, k := range a.kinds {
		for w := k.period.Of(first, a.cfg.Window); !w.End.After(through); w = k.period.Of(w.End, a.cfg.Window) {
			if _, decided := a.rlog.decided(w); decided || done[w.key()] {
				continue // released (or refused) once, under whatever plan: never drawn again
			}
			if err := a.releaseWindow(ctx, k, w); err != nil {
				if errors.Is(err, ledger.ErrOverdraw) {
					continue // counted and logged; later windows may belong to a fresh period
				}
				return err
			}
		}
	}
	return nil
}

// partialsOf returns what window w of kind k is released from: the tenant rows of every base
// window in w, from every partition, merged per tenant and bounded once over w (at most L0
// cells, LInf in each). A base window is released this way too, not from the partials each
// partition bounded on its own: a tenant's events of one window reach two partitions when
// partitions are added to the raw topic while the window is open (the key's partition moves),
// and two partitions' partials would then count the tenant up to twice the bounds.
//
// Always, not only when some tenant is in two partitions' rows: otherwise the result is the
// same as merging the partials (the rows are what the partials were bounded from, with the
// same caps, and each tenant's sample is seeded by window, metric and tenant, whatever the
// partition), so one path serves both. It costs reading and bounding the window's rows
// instead of its partials, once a window: measured on one server over three partitions, 0.18 s
// instead of 0.01 s for 1,000 synthetic tenants (30,099 rows a day), 2 s instead of 0.03 s for
// 10,000 (304,080 rows), with the same values in every cell; a month's release already reads
// thirty days of such rows.
//
// A partition whose first close of a base window stored partials but no tenant rows closed
// it before tenant rows were stored with every base window: its partials are merged as
// they were.
func (a *Aggregator) partialsOf(ctx context.Context, k releaseKind, w Window) ([]Partial, error) {
	rows, withRows, err := a.store.tenantRows(ctx, w)
	if err != nil {
		return nil, err
	}
	acc := k.plan.NewAcc(w) // the kind's plan: its partials are made with its ε
	if err := acc.AddRows(rows); err != nil {
		return nil, err
	}
	ps, err := acc.Partials(a.sampleKey)
	if err != nil || k.period != PeriodWindow {
		return ps, err
	}
	older, err := a.store.partialsExcept(ctx, w, withRows)
	if err != nil {
		return nil, err
	}
	return append(ps, older...), nil
}

// ReleaseID is the id of the release of window w under the plan.
func ReleaseID(planHash string, w Window) string {
	h := sha256.Sum256([]byte(planHash + "|" + w.String()))
	return hex.EncodeToString(h[:8])
}

// releaseWindow draws window w's release and publishes it through the release log
// (releaselog.go): merge the partials, select, noise once per cell, write the draw to the log,
// read the log back. Only the first record for a window is ever published, so a releaser that
// lost the race — or was paused while another took over — discards its draw. Then everything
// the log decided is materialised into ClickHouse, in log order.
func (a *Aggregator) releaseWindow(ctx context.Context, k releaseKind, w Window) error {
	if err := a.rlog.sync(ctx); err != nil {
		return err
	}
	if _, decided := a.rlog.decided(w); !decided {
		period := w.Start.UTC().Format("2006-01")
		eps, delta := k.plan.Cost()
		d, err := a.decide(ctx)
		if err != nil {
			return err
		}
		if ok, which := d.book.fits(w.Start, ledger.Budget{Epsilon: eps, Delta: delta}); !ok {
			spent := d.book.spentIn(period)
			a.refuse(w, fmt.Errorf("%w (%s): %s %s has spent ε=%.4g δ=%.3g of ε=%.4g δ=%.3g a month, ε=%.4g δ=%.3g a rolling year; this release needs ε=%.4g δ=%.3g",
				ledger.ErrOverdraw, which, Purpose, period, spent.Epsilon, spent.Delta, a.budget.Epsilon, a.budget.Delta, a.yearBudget.Epsilon, a.yearBudget.Delta, eps, delta))
			a.updateBudget(ctx, period)
			return ledger.ErrOverdraw
		}
		partials, err := a.partialsOf(ctx, k, w)
		if err != nil {
			return err
		}
		rs, oc, err := k.plan.Release(partials)
		if err != nil {
			return err
		}
		l0, linf := k.plan.maxBounds()
		rec := &releaseRecord{
			Database: a.store.db, ReleaseID: ReleaseID(k.hash, w), Draw: uuid.NewString(), Plan: k.hash,
			PolicyVersion: k.plan.PolicyVersion, WindowStart: w.Start.UTC(), WindowEnd: w.End.UTC(),
			Epsilon: eps, Delta: delta, L0: l0, LInf: linf, At: a.now().UTC().Truncate(time.Second), Cells: rs,
		}
		a.log.Info("release drawn", "period", string(k.period), "window", w.String(), "release", rec.ReleaseID, "cells", oc.Released, "suppressed", oc.Suppressed)
		if a.afterDraw != nil {
			a.afterDraw() // a test's failpoint: the worst moment to be paused
		} else if d := releasePause(); d > 0 {
			time.Sleep(d)
		}
		if err := a.rlog.append(ctx, rec); err != nil {
			return fmt.Errorf("write the release of %v to the release log: %w", w, err)
		}
		if err := a.rlog.sync(ctx); err != nil {
			return err
		}
		if won, _ := a.rlog.decided(w); won == nil || won.Draw != rec.Draw {
			a.m.draws.WithLabelValues("discarded").Inc()
			a.log.Warn("another release of this window came first; this draw is discarded, never published", "window", w.String())
		} else {
			a.m.draws.WithLabelValues("first").Inc()
			if oc.Suppressed > 0 {
				a.m.cells.WithLabelValues("any", "suppressed").Add(float64(oc.Suppressed))
			}
		}
	}
	return a.materialise(ctx)
}

// releasePause is the failpoint of the release tests (SHUKEI_TEST_RELEASE_PAUSE, a duration):
// how long a releaser waits between drawing a release and writing it to the log.
func releasePause() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("SHUKEI_TEST_RELEASE_PAUSE"))
	return d
}

func overdraws(spent, cost, budget ledger.Budget) bool {
	// A small tolerance for float sums: ten releases of 0.1 must fit a budget of 1.
	const tol = 1e-9
	return spent.Epsilon+cost.Epsilon > budget.Epsilon+tol || spent.Delta+cost.Delta > budget.Delta+tol
}

// refuse counts and logs a window's refusal once.
func (a *Aggregator) refuse(w Window, err error) {
	a.refusedMu.Lock()
	first := !a.refused[w.key()]
	a.refused[w.key()] = true
	a.refusedMu.Unlock()
	if first {
		a.m.refusals.WithLabelValues(Purpose, "budget").Inc()
		a.log.Error("release refused: the privacy budget would be overdrawn", "window", w.String(), "err", err)
	}
}

// logDecision is what the release log decided, replayed in log order against the budget.
type logDecision struct {
	legacy  []ledger.Entry // ledger entries of releases made before the release log
	publish []*releaseRecord
	refused []*releaseRecord // first records that found the budget spent at their place in the log
	book    *book            // every charge accepted, legacy and published
}

// decide replays the log's first records in order: each is published when both budgets — its
// month's and every rolling year's around it — still allow it after every earlier one (and
// the ledger's older entries), refused otherwise. Every instance that reads the same log
// decides the same.
func (a *Aggregator) decide(ctx context.Context) (logDecision, error) {
	d := logDecision{book: &book{b: budgets{month: a.budget, year: a.yearBudget}}}
	firsts := a.rlog.firsts()
	inLog := map[string]bool{}
	for _, r := range firsts {
		inLog[r.ReleaseID] = true
	}
	entries, err := a.ledger.Entries(ctx, Purpose)
	if err != nil {
		return d, err
	}
	for _, e := range entries {
		if !inLog[e.ReleaseID] {
			d.legacy = append(d.legacy, e)
			d.book.charge(e.WindowStart, ledger.Budget{Epsilon: e.Epsilon, Delta: e.Delta})
		}
	}
	for _, r := range firsts {
		cost := ledger.Budget{Epsilon: r.Epsilon, Delta: r.Delta}
		if ok, _ := d.book.fits(r.WindowStart, cost); !ok {
			d.refused = append(d.refused, r)
			continue
		}
		d.book.charge(r.WindowStart, cost)
		d.publish = append(d.publish, r)
	}
	return d, nil
}

// materialiseGrace is how long a release log record is left to the instance that drew it
// before any other instance materialises it (the drawer died before it could). Two instances
// that materialise one record at once write identical rows, which readers collapse; leaving a
// fresh record to its drawer keeps that to the rare case of a drawer that stalls past it.
const materialiseGrace = 30 * time.Second

// materialise writes what the log decided into ClickHouse: the ledger's charges, in log order,
// and the release rows of every published window that has none yet. It writes only what is
// missing, and only the log's: its own draws at once, another instance's once that instance
// had materialiseGrace to do it. It stops at the first record it must leave to its drawer, so
// the ledger's entries always follow the log's order.
func (a *Aggregator) materialise(ctx context.Context) error {
	d, err := a.decide(ctx)
	if err != nil {
		return err
	}
	for _, r := range d.refused {
		a.refuse(r.window(), fmt.Errorf("%w: the release drawn for this window found its month's or year's budget spent by the releases before it in the release log", ledger.ErrOverdraw))
	}
	stored, err := a.store.releasedIDs(ctx)
	if err != nil {
		return err
	}
	charged := map[string]bool{}
	for _, e := range d.legacy {
		charged[e.ReleaseID] = true
	}
	entries, err := a.ledger.Entries(ctx, Purpose)
	if err != nil {
		return err
	}
	for _, e := range entries {
		charged[e.ReleaseID] = true
	}
	now := time.Now() // wall clock: the grace runs against the broker's time of the record
	var mine []*releaseRecord
	for _, r := range d.publish {
		if stored[r.ReleaseID] && charged[r.ReleaseID] {
			continue
		}
		if !a.rlog.drew(r.Draw) && now.Sub(r.logged) < materialiseGrace {
			break // left to its drawer for now; the next round looks again
		}
		mine = append(mine, r)
	}
	ledgerEntries := make([]ledger.Entry, len(mine))
	for i, r := range mine {
		ledgerEntries[i] = ledger.Entry{
			ReleaseID: r.ReleaseID, Purpose: Purpose, Period: r.WindowStart.UTC().Format("2006-01"),
			Epsilon: r.Epsilon, Delta: r.Delta, L0: r.L0, LInf: r.LInf, WindowStart: r.WindowStart, WindowEnd: r.WindowEnd,
			QueryHash: r.Plan, PolicyVersion: r.PolicyVersion, At: r.At,
		}
	}
	if _, err := a.ledger.Append(ctx, Purpose, ledgerEntries); err != nil {
		return fmt.Errorf("append to the budget ledger: %w", err)
	}
	for _, r := range mine {
		if stored[r.ReleaseID] {
			continue
		}
		if err := a.store.insertReleases(ctx, r.ReleaseID, r.Plan, r.window(), r.Cells, r.PolicyVersion, r.At); err != nil {
			return fmt.Errorf("store the release of %v: %w", r.window(), err)
		}
		for _, c := range r.Cells {
			a.m.cells.WithLabelValues(c.Metric, "released").Inc()
		}
		a.m.windowsReleased.Inc()
		a.log.Info("window released", "window", r.window().String(), "release", r.ReleaseID, "cells", len(r.Cells))
		a.updateBudget(ctx, r.WindowStart.UTC().Format("2006-01"))
	}
	return nil
}

func (a *Aggregator) updateBudget(ctx context.Context, period string) {
	spent, err := a.ledger.Spent(ctx, Purpose, period)
	if err != nil {
		return
	}
	a.m.budgetEps.WithLabelValues(Purpose).Set(a.budget.Epsilon - spent.Epsilon)
	a.m.budgetDelta.WithLabelValues(Purpose).Set(a.budget.Delta - spent.Delta)
}

// retry runs fn until it succeeds or ctx ends: backpressure, not loss.
func (a *Aggregator) retry(ctx context.Context, what string, fn func() error) error {
	err := group.Retry(ctx, a.cfg.MaxBackoff, fn, func(err error) {
		a.m.retrying.Set(1)
		a.m.writeErrors.WithLabelValues(what).Inc()
		a.log.Warn("aggregator write failed; backing off", "what", what, "err", group.ErrText(err))
	})
	if err == nil {
		a.m.retrying.Set(0)
	}
	return err
}

// withoutDeleted drops the tenant rows of tenants deleted, or being deleted, since their
// window's events were read: the tombstones are read afresh once the close's insert is open
// on the server (store.writeClose), so a tenant whose deletion began meanwhile leaves no raw
// material for the weeks and months released afterwards (promise 8); a deletion this read
// misses waits for that insert before it deletes.
func (a *Aggregator) withoutDeleted(ctx context.Context, closed []closedWindow) ([]closedWindow, error) {
	rows := false
	for _, c := range closed {
		rows = rows || len(c.tenants) > 0
	}
	if !rows || a.hashKey == nil {
		return closed, nil
	}
	gone, err := a.cache.Tombstones(ctx)
	if err != nil || len(gone) == 0 {
		return closed, err
	}
	out := make([]closedWindow, len(closed))
	for i, c := range closed {
		out[i] = c
		out[i].tenants = nil
		dropped := false
		for _, t := range c.tenants {
			if gone[decision.TenantTombstone(a.hashKey, t.Tenant)] {
				dropped = true
				continue
			}
			out[i].tenants = append(out[i].tenants, t)
		}
		if dropped && a.kinds[0].period == PeriodWindow {
			// The partials follow the rows: bounded from what is left, exactly as the window's
			// Acc would have bounded it without the deleted tenants.
			acc := a.plan.NewAcc(c.w)
			if err := acc.AddRows(out[i].tenants); err != nil {
				return nil, err
			}
			ps, err := acc.Partials(a.sampleKey)
			if err != nil {
				return nil, err
			}
			out[i].partials = ps
		}
	}
	return out, nil
}
