package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrNotFound means no DLQ record has the key asked for.
var ErrNotFound = errors.New("no DLQ record with that key")

// errStop ends a scan early.
var errStop = errors.New("stop")

// Found is the record Find returned and what else it saw under the same key.
type Found struct {
	Record Record
	Copies int // re-sent copies of the record beyond the first
	// Malformed is set when the record with the key could not be parsed; Record then holds
	// only its position.
	Malformed *Malformed
}

// Find looks for the DLQ record of one raw-topic position. The processor writes a record to
// the DLQ partition that the Murmur2 hash of its key chooses, so that partition is read first
// (to its end, counting re-sent copies); the others only if the key is not there.
func Find(ctx context.Context, src Source, key Position) (Found, error) {
	counts, err := src.partitions(ctx)
	if err != nil {
		return Found{}, err
	}
	want := key.String()
	all := make([]int, counts)
	for i := range all {
		all[i] = i
	}
	home := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(want)}, all...)
	order := []int{home}
	for _, p := range all {
		if p != home {
			order = append(order, p)
		}
	}
	var f Found
	hits := 0
	for _, p := range order {
		_, err := src.Scan(ctx, time.Time{}, []int{p}, func(m kafka.Message) error {
			if string(m.Key) != want {
				return nil
			}
			hits++
			if hits > 1 {
				return nil
			}
			r, err := Parse(m)
			f.Record = r
			if err != nil {
				f.Malformed = err.(*Malformed)
			}
			return nil
		})
		if err != nil {
			return f, err
		}
		if hits > 0 {
			f.Copies = hits - 1
			return f, nil
		}
	}
	return f, fmt.Errorf("%w: %s in %s (the key is <raw topic>/<partition>/<offset> of the refused message; 'shukei dlq stats' shows what the DLQ holds)", ErrNotFound, key, src.Topic)
}

func (s Source) partitions(ctx context.Context) (int, error) {
	b, err := s.bounds(ctx, time.Time{}, nil)
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// Show finds the record of the refused message at key ("<raw topic>/<partition>/<offset>",
// ParseKey) and writes it (WriteRecord) ('shukei dlq show').
func Show(ctx context.Context, w io.Writer, src Source, key string) error {
	pos, err := ParseKey(key)
	if err != nil {
		return err
	}
	f, err := Find(ctx, src, pos)
	if err != nil {
		return err
	}
	return WriteRecord(w, f)
}

// WriteRecord prints a record's headers and, only when it kept one, its payload as indented
// JSON. A legacy record's value (written before payloads were content-free) is never printed.
func WriteRecord(w io.Writer, f Found) error {
	r := f.Record
	fmt.Fprintf(w, "key           %s\n", r.Key)
	fmt.Fprintf(w, "dlq position  partition %d, offset %d, at %s\n", r.Partition, r.Offset, r.Time.UTC().Format(time.RFC3339))
	if f.Malformed != nil {
		fmt.Fprintf(w, "malformed     %s (%s): nothing of it is shown\n", f.Malformed.Code, f.Malformed.Msg)
		return nil
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, h := range []struct{ k, v string }{
		{HeaderReason, r.Reason}, {HeaderClass, r.Class}, {HeaderField, r.Field}, {HeaderTenant, r.Tenant},
		{HeaderSchema, r.Schema}, {HeaderEventID, r.EventID}, {HeaderPayloadHMAC, r.PayloadHMAC}, {HeaderKept, r.Kept},
	} {
		fmt.Fprintf(w, "%-13s %s\n", h.k, dash(h.v))
	}
	if f.Copies > 0 {
		fmt.Fprintf(w, "copies        %d re-sent copies of this record (the same refusal)\n", f.Copies)
	}
	switch r.Kept {
	case KeptPayload:
		var b bytes.Buffer
		if err := json.Indent(&b, bytes.TrimSpace(r.Payload), "", "  "); err != nil {
			return fmt.Errorf("payload of %s: %w", r.Key, err) // Parse checked it is JSON
		}
		fmt.Fprintf(w, "payload (content-free: refused values are keyed hashes, %q…):\n%s\n", Marker, b.String())
	case KeptLegacy:
		fmt.Fprintln(w, "payload not shown (legacy record without a kept header: it predates content-free payloads)")
	default:
		fmt.Fprintln(w, "payload not kept (metadata only)")
	}
	return nil
}
