package ops

import (
	"io"
	"log/slog"

	"github.com/shukei/shukei/config"
)

// NewLogger is the logger of the configuration's log.level and log.format ("json", else text),
// writing to w.
func NewLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
