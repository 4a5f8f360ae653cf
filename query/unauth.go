package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/shukei/shukei/audit"
)

// pace holds a refusal without a valid token until its turn: they are answered at most rate
// a second (with a burst of a tenth of a second's worth), so a flood spends a bounded share of
// the machine — its connections wait, holding no slot and no ClickHouse query — and the
// reports of principals keep answering. A request would wait at most maxPace; beyond that the
// limiter's debt is not grown (the flood's connections are then paced by maxPace each).
type pace struct {
	lim *rate.Limiter
}

const maxPace = 5 * time.Second

func newPace(perSecond float64) *pace {
	return &pace{lim: rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond/10)))}
}

// wait returns once the request may be answered, or ctx ends.
func (p *pace) wait(ctx context.Context) {
	r := p.lim.Reserve()
	d := r.Delay()
	if d <= 0 {
		return
	}
	if d > maxPace {
		r.Cancel()
		d = maxPace
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Reports named by the records of requests without a valid token.
const (
	reportUnauthenticated        = "unauthenticated"
	reportUnauthenticatedSummary = "unauthenticated_summary"
)

// unauthSummary audits the requests refused for want of a valid token (none, malformed,
// unknown) once per interval rather than once each (promise 18): the first refusal of an
// interval appends a record (decision denied, no principal), whose seq every later refusal of
// that interval is answered with; when the interval ends, a summary record carries their
// count (Rows), the interval and the reasons. So a flood of them appends two records an
// interval, and costs no ClickHouse query of its own.
type unauthSummary struct {
	every  time.Duration
	log    *audit.Log
	logger *slog.Logger
	failed func() // counts a record that could not be written

	mu       sync.Mutex
	cur      *interval
	failedAt time.Time // the last append that failed: none is tried again for a second
}

type interval struct {
	start   time.Time // monotonic
	at      time.Time // wall clock, for the records
	seq     uint64    // the opening record
	count   uint64
	reasons map[string]uint64
}

var errAuditBackoff = errors.New("the audit log could not be written a moment ago")

// refuse counts one refusal and returns the seq of its interval's record.
// kind is one of "no token", "malformed", "unknown token"; why the text answered.
func (u *unauthSummary) refuse(kind, why string) (uint64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur != nil && time.Since(u.cur.start) >= u.every {
		u.closeLocked()
	}
	if u.cur == nil {
		if !u.failedAt.IsZero() && time.Since(u.failedAt) < time.Second {
			return 0, errAuditBackoff
		}
		start := time.Now()
		at := start.UTC()
		rec, err := u.append(audit.Record{Principal: "anonymous", Report: reportUnauthenticated, Decision: audit.Denied,
			Reason: fmt.Sprintf("%s; every request without a valid token until %s answers with this record and is counted in a summary record",
				why, at.Add(u.every).Format(time.RFC3339))})
		if err != nil {
			u.failedAt = time.Now()
			return 0, err
		}
		iv := &interval{start: start, at: at, seq: rec.Seq, reasons: map[string]uint64{}}
		u.cur = iv
		time.AfterFunc(u.every, func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			if u.cur == iv {
				u.closeLocked()
			}
		})
	}
	u.cur.count++
	u.cur.reasons[kind]++
	return u.cur.seq, nil
}

// flush closes the open interval, if any (at shutdown).
func (u *unauthSummary) flush() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur != nil {
		u.closeLocked()
	}
}

// closeLocked appends the summary of the open interval; u.mu is held.
func (u *unauthSummary) closeLocked() {
	iv := u.cur
	u.cur = nil
	end := iv.at.Add(time.Since(iv.start)).Truncate(time.Second)
	var parts []string
	for why, n := range iv.reasons {
		parts = append(parts, fmt.Sprintf("%s: %d", why, n))
	}
	sort.Strings(parts)
	// The kinds are the three fixed ones of refuseUnauthenticated: nothing a client sent.
	reason := fmt.Sprintf("%d requests without a valid token from %s to %s, answered with record #%d (%s)",
		iv.count, iv.at.Format(time.RFC3339), end.Format(time.RFC3339), iv.seq, strings.Join(parts, ", "))
	if _, err := u.append(audit.Record{Principal: "anonymous", Report: reportUnauthenticatedSummary, Decision: audit.Denied,
		Reason: reason, Rows: iv.count}); err != nil {
		u.logger.Error("the summary of requests without a valid token could not be written to the audit log", "summary", reason, "err", err)
	}
}

func (u *unauthSummary) append(r audit.Record) (audit.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := u.log.Append(ctx, r)
	if err != nil {
		u.failed()
	}
	return rec, err
}
