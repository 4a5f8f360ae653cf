//go:build race

package attack

// trustRace: this test binary runs under the race detector, whose cost is the flooding
// client's, not the query service's (a separate binary built without it).
const trustRace = true
