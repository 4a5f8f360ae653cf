// Command shukei is every role of Shukei in one binary: one subcommand a role.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		if !errors.Is(err, errQuiet) {
			fmt.Fprintln(os.Stderr, "shukei:", err)
		}
		os.Exit(1)
	}
}

// errQuiet ends the process with status 1 after the command has already said why.
var errQuiet = errors.New("failed")
