package ops

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
)

// Profile starts a CPU profile of the process and returns the function that stops it and
// writes both profiles: <prefix>.cpu.pprof (from now until stop) and <prefix>.allocs.pprof
// (every allocation since the process started, sampled as the runtime does). An empty prefix
// profiles nothing. Profiles hold code paths and sizes, never the data processed.
func Profile(prefix string) (stop func() error, err error) {
	if prefix == "" {
		return func() error { return nil }, nil
	}
	cpu, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		_ = cpu.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		errCPU := cpu.Close()
		allocs, err := os.Create(prefix + ".allocs.pprof")
		if err != nil {
			return errors.Join(errCPU, fmt.Errorf("allocs profile: %w", err))
		}
		errW := pprof.Lookup("allocs").WriteTo(allocs, 0)
		return errors.Join(errCPU, errW, allocs.Close())
	}, nil
}
