//go:build !race

package dp

const raceDetector = false
