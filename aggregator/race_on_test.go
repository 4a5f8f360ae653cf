//go:build race

package aggregator

// raceDetector: the statistical tests that only draw noise in one goroutine skip under -race
// (it would multiply their minutes and check nothing); make test runs them without it.
const raceDetector = true
