package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/gate"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/topic"
)

// recordSeal is the Kind of a release-log record that publishes a week's gated atoms.
const recordSeal = "seal"

func sealKey(purpose string, week time.Time) string {
	return "seal/" + purpose + "/" + week.UTC().Format(time.DateOnly)
}

// Sealer seals the gated atoms of every ISO week once (gate/gate.go, promise 9): a week that
// ended at least aggregator.seal_after ago has its atoms computed from the purpose's daily mart
// and published through the release log, where the first seal of a week is the only one ever
// materialised — so a sealer paused while another took over, or two sealers at once, never
// make a week's atoms change once they can be read. The aggregator's release step runs it;
// 'shukei atoms seal' runs one pass.
type Sealer struct {
	conn   driver.Conn
	marts  driver.Conn // reads the purpose marts atoms are computed from (a read-only user); conn when nil
	prefix string
	// cluster is clickhouse.cluster: the marts are read through their Distributed tables.
	cluster string
	rlog    *releaseLog
	k       int
	after   time.Duration
	now     func() time.Time
	log     *slog.Logger
	sealed  *prometheus.CounterVec
	first   map[string]time.Time          // purpose → its first week with data, once known
	stored  map[string]map[time.Time]bool // purpose → weeks materialised, read once, then kept
}

// NewSealer returns a sealer of database prefix with its own reader of the release log.
func NewSealer(cfg config.Config, conn driver.Conn, k int, reg prometheus.Registerer, log *slog.Logger) *Sealer {
	db := cfg.ClickHouse.Database
	return newSealer(conn, db, newReleaseLog(cfg.Kafka.Brokers, topic.ReleaseSpec(cfg.Kafka), db), k, cfg.Aggregator.SealAfter, reg, log, time.Now).onCluster(cfg.ClickHouse.Cluster)
}

// onCluster makes the sealer read the marts of every shard of cluster; it returns s.
func (s *Sealer) onCluster(cluster string) *Sealer {
	s.cluster = cluster
	return s
}

// SealDueTo is 'shukei atoms seal': one pass of a sealer of the configured database, with k
// the policy's or query.k (ops.QueryK), on a connection of its own (Sealer.SealDue); what it
// sealed, before an error too, is written to w (gate.WriteSeals).
func SealDueTo(ctx context.Context, w io.Writer, cfg config.Config, log *slog.Logger) error {
	k, err := ops.QueryK(cfg.Query)
	if err != nil {
		return err
	}
	return ops.WithClickHouse(ctx, cfg.ClickHouse, func(conn driver.Conn) error {
		s := NewSealer(cfg, conn, k, nil, log)
		defer s.Close()
		sealed, err := s.SealDue(ctx)
		if err == nil || len(sealed) > 0 {
			gate.WriteSeals(w, sealed) // what was sealed before an error too
		}
		return err
	})
}

func newSealer(conn driver.Conn, prefix string, rlog *releaseLog, k int, after time.Duration, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) *Sealer {
	sealed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shukei_aggregator_weeks_sealed_total",
		Help: "ISO weeks whose gated atoms this process sealed and published first, by purpose.",
	}, []string{"purpose"})
	if reg != nil {
		if err := reg.Register(sealed); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				sealed = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sealer{conn: conn, prefix: prefix, rlog: rlog, k: k, after: after, now: now, log: log, sealed: sealed,
		first: map[string]time.Time{}, stored: map[string]map[time.Time]bool{}}
}

// ReadMartsWith makes the sealer read the purpose marts on marts (the aggregator's read-only
// user, promise 16) and write the gated atoms on its own connection; it returns s.
func (s *Sealer) ReadMartsWith(marts driver.Conn) *Sealer {
	s.marts = marts
	return s
}

func (s *Sealer) martsConn() driver.Conn {
	if s.marts != nil {
		return s.marts
	}
	return s.conn
}

// Close releases the sealer's writer of the release log (only one made by NewSealer).
func (s *Sealer) Close() error { return s.rlog.close() }

// SealDue seals every due week not sealed yet, materialises every seal the log decided, and
// returns the seals this call published first.
func (s *Sealer) SealDue(ctx context.Context) ([]gate.Seal, error) {
	if err := s.rlog.sync(ctx); err != nil {
		return nil, err
	}
	var out []gate.Seal
	last := gate.Monday(s.now().Add(-s.after)).AddDate(0, 0, -7) // the last week ended seal_after ago
	for _, p := range gate.Purposes {
		purpose := p.String()
		// Read once: weeks only ever get materialised, and one written again by another
		// sealer is written with the same rows.
		stored := s.stored[purpose]
		if stored == nil {
			var err error
			if stored, err = gate.Sealed(ctx, s.conn, s.prefix, purpose); err != nil {
				return out, err
			}
			s.stored[purpose] = stored
		}
		// Seals the log decided that are not materialised yet (their sealer may have died).
		for _, sl := range s.rlog.firstSeals() {
			if sl.Purpose == purpose && !stored[sl.Week.UTC()] {
				if err := gate.Materialise(ctx, s.conn, s.prefix, *sl); err != nil {
					return out, err
				}
				stored[sl.Week.UTC()] = true
			}
		}
		first, ok := s.first[purpose]
		if !ok {
			f, any, err := gate.FirstWeek(ctx, s.martsConn(), s.prefix, s.cluster, purpose)
			if err != nil {
				return out, err
			}
			if !any {
				continue
			}
			first = f.AddDate(0, 0, -7*gate.Before)
			s.first[purpose] = first
		}
		for w := first; !w.After(last); w = w.AddDate(0, 0, 7) {
			if _, decided := s.rlog.sealed(purpose, w); decided || stored[w] {
				continue
			}
			sl, won, err := s.seal(ctx, purpose, w)
			if err != nil {
				return out, err
			}
			if err := gate.Materialise(ctx, s.conn, s.prefix, *sl); err != nil {
				return out, err
			}
			stored[w] = true
			if won {
				out = append(out, *sl)
			}
		}
	}
	return out, nil
}

// seal computes purpose's atoms of week w, publishes them and returns the week's first seal —
// this one (won) or an earlier one another sealer published.
func (s *Sealer) seal(ctx context.Context, purpose string, w time.Time) (*gate.Seal, bool, error) {
	atoms, err := gate.Compute(ctx, s.martsConn(), s.prefix, s.cluster, purpose, w, s.k)
	if err != nil {
		return nil, false, err
	}
	mine := &gate.Seal{Purpose: purpose, Week: w.UTC(), K: s.k, ID: uuid.NewString(), At: s.now().UTC().Truncate(time.Second), Atoms: atoms}
	rec := &releaseRecord{Database: s.rlog.db, Kind: recordSeal, Seal: mine, At: mine.At}
	if err := s.rlog.append(ctx, rec); err != nil {
		return nil, false, fmt.Errorf("publish the seal of %s %s: %w", purpose, w.Format(time.DateOnly), err)
	}
	if err := s.rlog.sync(ctx); err != nil {
		return nil, false, err
	}
	first, ok := s.rlog.sealed(purpose, w)
	if !ok {
		return nil, false, fmt.Errorf("the seal of %s %s is not in the release log after it was written", purpose, w.Format(time.DateOnly))
	}
	won := first.ID == mine.ID
	if won {
		s.sealed.WithLabelValues(purpose).Inc()
		s.log.Info("week sealed", "purpose", purpose, "week", w.Format(time.DateOnly), "atoms", len(atoms), "k", s.k)
	} else {
		s.log.Warn("another sealer published this week first; its atoms are the week's, this computation is discarded", "purpose", purpose, "week", w.Format(time.DateOnly))
	}
	return first, won, nil
}

// SealEveryWeek seals every complete week now, whatever aggregator.seal_after says: for the
// demo and the benchmarks, whose history is all stored before their reports run (a deployment's
// release step seals aggregator.seal_after after each week ends).
func SealEveryWeek(ctx context.Context, cfg config.Config, conn driver.Conn, log *slog.Logger) ([]gate.Seal, error) {
	k, err := ops.QueryK(cfg.Query)
	if err != nil {
		return nil, err
	}
	cfg.Aggregator.SealAfter = 0
	s := NewSealer(cfg, conn, k, nil, log)
	defer s.Close()
	return s.SealDue(ctx)
}
