package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Addr's ports lie below the ephemeral range, can be listened on, and differ from call to call.
func TestAddr(t *testing.T) {
	floor := ephemeralFloor()
	seen := map[string]bool{}
	for range 50 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if host != "127.0.0.1" || port < Lowest || port >= floor {
			t.Fatalf("Addr() = %s, want 127.0.0.1 with a port in [%d, %d)", addr, Lowest, floor)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s from Addr: %v", addr, err)
		}
		ln.Close()
		seen[addr] = true
	}
	if len(seen) < 45 {
		t.Errorf("50 calls gave only %d distinct addresses", len(seen))
	}
}

// A port taken by a listener is never returned while it listens.
func TestAddrSkipsTakenPorts(t *testing.T) {
	var held []net.Listener
	taken := map[string]bool{}
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for range 200 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if taken[addr] {
			t.Fatalf("Addr returned %s, which a listener here holds", addr)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		taken[addr] = true
	}
}
