package loadgen

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
)

// Job is one run of 'shukei loadgen': what to generate, how to send it and where.
type Job struct {
	Config  Config
	Options Options
	// Direct writes straight to the raw Kafka topic instead of posting to the collector.
	Direct bool
	// URL is the collector's base URL; "" means http://<collector.listen>.
	URL string
	// TokensFile keeps the tenants' ingest tokens between runs.
	TokensFile string
}

// Run registers the job's tenants (with ingest tokens) in the registry of cfg, sends its
// events to the collector (or to Kafka) and prints what it did to out.
func Run(ctx context.Context, out io.Writer, cfg config.Config, j Job) error {
	st, err := j.send(ctx, out, cfg)
	if err != nil {
		return err
	}
	where := "the collector"
	if j.Direct {
		where = "Kafka"
	}
	st.Print(out, where)
	return nil
}

// send registers the tenants and sends the events.
func (j Job) send(ctx context.Context, out io.Writer, c config.Config) (Stats, error) {
	lc := j.Config
	g, err := New(lc)
	if err != nil {
		return Stats{}, err
	}
	master, err := ops.MasterKey(c.Anonymizer)
	if err != nil {
		return Stats{}, err
	}
	tokens, added, err := RegisterTenants(ctx, c, master, g.Tenants(), j.TokensFile)
	if err != nil {
		return Stats{}, err
	}
	fmt.Fprintf(out, "tenants: %d (%d newly registered), events: %d over %d days, bad share %.1f%%\n", len(tokens), added, lc.Events, max(lc.Days, 1), 100*lc.BadShare)
	if j.Direct {
		return SendKafka(ctx, c.Kafka.Brokers, c.Kafka.RawTopic, g, j.Options)
	}
	if added > 0 {
		// A running collector learns new tokens at its next registry refresh.
		select {
		case <-ctx.Done():
			return Stats{}, ctx.Err()
		case <-time.After(c.Registry.Refresh + time.Second):
		}
	}
	url := j.URL
	if url == "" {
		url = "http://" + c.Collector.Listen
	}
	return SendHTTP(ctx, url, tokens, g, j.Options)
}

// Print writes the send's one-line summary to w; where names what it was sent to.
func (s Stats) Print(w io.Writer, where string) {
	refused, reasons := s.Refused()
	fmt.Fprintf(w, "sent %d events to %s in %s (%.0f events/s): accepted %d, refused %d", s.Sent, where, s.Elapsed.Round(time.Millisecond), s.Rate(), s.Accepted, refused)
	if reasons != "" {
		fmt.Fprintf(w, " (%s)", reasons)
	}
	if s.Retried > 0 {
		fmt.Fprintf(w, "; %d requests retried after 503", s.Retried)
	}
	fmt.Fprintln(w)
}
