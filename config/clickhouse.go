package config

import (
	"github.com/ClickHouse/clickhouse-go/v2"
)

// Options turns the settings into clickhouse-go options for the native protocol, the only
// transport that works against every server Shukei supports (18.16 up to current releases).
func (c ClickHouse) Options() *clickhouse.Options {
	db := c.DefaultDatabase
	if db == "" {
		db = "default"
	}
	return &clickhouse.Options{
		Addr:     append([]string(nil), c.Addr...),
		Protocol: clickhouse.Native,
		Auth: clickhouse.Auth{
			Database: db,
			Username: c.Username,
			Password: c.Password,
		},
		DialTimeout: c.DialTimeout,
		// Integers, not strings: 18.16 rejects settings sent as text of another type.
		Settings: clickhouse.Settings{},
		// LZ4 on the wire: batches of 10k-100k rows compress well and the server speaks it.
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		ClientInfo: clickhouse.ClientInfo{
			Products: []struct{ Name, Version string }{{Name: "shukei", Version: "dev"}},
		},
		DialContext: c.Dial,
	}
}
