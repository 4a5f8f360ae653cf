package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/shukei/shukei/anonymizer/pseudonym"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/registry"
)

// RegisterTenants adds the tenants missing from the registry and returns an ingest token
// for each: the one kept in tokensFile (if not empty) when the registry still holds its hash,
// else a new one; it also returns how many tenants or tokens it added. 'shukei loadgen' and
// the pipeline benchmark register their tenants with it.
func RegisterTenants(ctx context.Context, c config.Config, master *pseudonym.MasterKey, ts []registry.Tenant, tokensFile string) (map[string]string, int, error) {
	kept := map[string]string{}
	if tokensFile != "" {
		if b, err := os.ReadFile(tokensFile); err == nil {
			if err := json.Unmarshal(b, &kept); err != nil {
				return nil, 0, fmt.Errorf("%s: %w", tokensFile, err)
			}
		}
	}
	conn, err := ops.OpenClickHouse(ctx, c.ClickHouse)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	reg := registry.New(conn, c.ClickHouse.Database, master).Placing(c.ClickHouse.Cluster)
	existing, err := reg.List(ctx)
	if err != nil {
		return nil, 0, err
	}
	hashes := map[string][]string{}
	for _, t := range existing {
		hashes[t.ID] = t.TokenHashes
	}
	tokens := map[string]string{}
	added := 0
	for _, t := range ts {
		hs, known := hashes[t.ID]
		switch tok := kept[t.ID]; {
		case known && tok != "" && slices.Contains(hs, registry.TokenHash(tok)):
			tokens[t.ID] = tok
		case known:
			if tokens[t.ID], err = reg.AddToken(ctx, t.ID); err != nil {
				return nil, 0, err
			}
			added++
		default:
			if tokens[t.ID], err = reg.Add(ctx, t); err != nil && !errors.Is(err, registry.ErrExists) {
				return nil, 0, err
			}
			added++
		}
	}
	if tokensFile != "" {
		for id, tok := range tokens {
			kept[id] = tok // other runs' tenants stay in the file
		}
		b, _ := json.MarshalIndent(kept, "", "  ")
		if err := os.MkdirAll(filepath.Dir(tokensFile), 0o700); err != nil {
			return nil, 0, err
		}
		if err := os.WriteFile(tokensFile, b, 0o600); err != nil {
			return nil, 0, err
		}
	}
	return tokens, added, nil
}
