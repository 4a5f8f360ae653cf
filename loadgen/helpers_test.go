package loadgen

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func sortDesc(xs []int) { slices.SortFunc(xs, func(a, b int) int { return b - a }) }

// top returns the n most used features, in order.
func top(m map[string]int, n int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	return strings.Join(keys[:min(n, len(keys))], ",")
}
