package processor

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
)

// copyRaw is process without the decision: the benchmark baseline. It writes every message
// as it came, then the same checkpoints, so resumption works the same way.
func (p *Processor) copyRaw(ctx context.Context, batch []kafka.Message, state map[int]*partitionState) error {
	now := p.now().UTC().Truncate(time.Second)
	last := map[int]int64{}
	err := p.retry(ctx, "insert raw copy", func() error {
		b, err := p.conn.PrepareBatch(ctx, "INSERT INTO "+p.db+".raw_copy (ingested_at, kafka_partition, kafka_offset, payload)")
		if err != nil {
			return err
		}
		for _, m := range batch {
			last[m.Partition] = max(last[m.Partition], m.Offset)
			if st := state[m.Partition]; st == nil || st.stored(m.Offset) {
				continue
			}
			if err := b.Append(now, uint16(m.Partition), uint64(m.Offset), string(m.Value)); err != nil {
				return err
			}
		}
		return b.Send()
	})
	if err != nil {
		return err
	}
	var rejs []rejected
	for part, off := range last {
		rejs = append(rejs, rejected{partition: part, offset: off})
	}
	if err := p.retry(ctx, "insert checkpoints", func() error { return insertRejections(ctx, p.conn, p.db, rejs, now, nil, nil) }); err != nil {
		return err
	}
	for part, off := range last {
		state[part].lo = max(state[part].lo, off)
	}
	return nil
}

// copyLoop is the baseline's batch loop: collect, copy, commit, one batch after another.
func (p *Processor) copyLoop(ctx context.Context, gen *kafka.Generation, msgs *inbox, state map[int]*partitionState) error {
	for {
		var deadline time.Time
		batch, err := p.collect(ctx, msgs, p.cfg.BatchSize, &deadline)
		if err != nil || ctx.Err() != nil {
			return err
		}
		if len(batch) == 0 {
			continue
		}
		if err := p.copyRaw(ctx, batch, state); err != nil {
			return err
		}
		next := map[int]int64{}
		for _, m := range batch {
			next[m.Partition] = max(next[m.Partition], m.Offset+1)
		}
		if err := gen.CommitOffsets(map[string]map[int]int64{p.kcfg.RawTopic: next}); err != nil {
			return err
		}
	}
}
