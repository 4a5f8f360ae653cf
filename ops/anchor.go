package ops

import (
	"context"
	"log/slog"
	"time"

	"github.com/shukei/shukei/audit/chain"
)

// AnchorLoop appends anchor's result to file every d until ctx ends; a failure is logged (and
// tried again next time), never fatal: the service goes on, and 'verify' reports the chain.
func AnchorLoop(ctx context.Context, what, file string, d time.Duration, anchor func(context.Context) (chain.Anchor, error), log *slog.Logger) {
	if d <= 0 || file == "" {
		return
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a, err := anchor(ctx)
		if err == nil {
			err = chain.AppendAnchor(file, a)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Error("could not anchor the "+what+"'s head", "file", file, "err", err)
			}
			continue
		}
		log.Debug("anchored the "+what+"'s head", "file", file)
	}
}
