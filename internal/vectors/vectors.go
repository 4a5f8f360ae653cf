// Package vectors reads the shared event test vectors in schemas/testdata, so the contract
// tests of every package read them the same way.
package vectors

import (
	"os"
	"path/filepath"
	"testing"
)

// Read returns the *.json files of dir (relative to root, the schemas/testdata folder) by
// file name, without expected.json; it fails the test when there are none.
func Read(tb testing.TB, root, dir string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(root, dir, "*.json"))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		if filepath.Base(p) == "expected.json" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	if len(out) == 0 {
		tb.Fatalf("no vectors in %s", dir)
	}
	return out
}
