//go:build !race

package attack

// trustRace: this test binary runs under the race detector (see trust_race_test.go).
const trustRace = false
