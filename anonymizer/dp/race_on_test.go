//go:build race

package dp

// raceDetector: the statistical tests, which only draw noise, skip under -race (it multiplies
// their minutes, ~150 s each, and checks nothing the other tests here do not); make test runs
// them without it.
const raceDetector = true
