package ops

import (
	"os"
	"path/filepath"
	"testing"
)

func TestProfileWritesBothFiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "p")
	stop, err := Profile(prefix)
	if err != nil {
		t.Fatal(err)
	}
	sink := 0
	for i := range 1_000_000 {
		sink += len(make([]byte, i%64))
	}
	_ = sink
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{prefix + ".cpu.pprof", prefix + ".allocs.pprof"} {
		st, err := os.Stat(f)
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, %v", f, st, err)
		}
	}
	none, err := Profile("")
	if err != nil || none() != nil {
		t.Fatal("an empty prefix profiles nothing and stops without error")
	}
}
