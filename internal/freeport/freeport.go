// Package freeport picks a loopback address for a test or a benchmark to hand to a process it
// starts (a role's listener, a proxy's upstream).
//
// Listening on port 0, closing, and passing the port on is racy in the way that matters on a
// busy machine: the kernel draws that port from its ephemeral range, the same range it draws
// the local ports of outgoing connections (every ClickHouse and Kafka client the tests open)
// and every other port-0 listener from. Between the close and the child's bind, one of those
// can take it, and the child exits with "address already in use" or, worse, the test talks to
// somebody else's server. Addr draws from below the ephemeral range instead, where the kernel
// never assigns a port on its own: only another caller of Addr drawing the same port in the
// same instant can collide.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Lowest is the bottom of the range Addr draws from. The services the tests start listen
// below it (ClickHouse 18xxx/19xxx, Kafka 19xxx, ZooKeeper 12181).
const Lowest = 20000

// ephemeralFloor is the lowest port the kernel assigns on its own (Linux's default when the
// setting cannot be read).
func ephemeralFloor() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// Addr returns "127.0.0.1:<port>" for a port below the kernel's ephemeral range that nothing
// listened on a moment ago.
func Addr() (string, error) {
	hi := ephemeralFloor()
	if hi-Lowest < 1000 {
		return "", fmt.Errorf("freeport: the kernel's ephemeral ports start at %d, leaving no room above %d", hi, Lowest)
	}
	var last error
	for range 200 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(Lowest+rand.IntN(hi-Lowest)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			last = err
			continue
		}
		if err := ln.Close(); err != nil {
			return "", err
		}
		return addr, nil
	}
	return "", fmt.Errorf("freeport: no free loopback port in [%d, %d) after 200 draws: %w", Lowest, hi, last)
}
