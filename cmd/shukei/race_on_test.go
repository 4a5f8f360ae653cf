//go:build race

package main

// raceDetector: under -race the demo test makes one short run (the detector multiplies the
// in-process pipeline's CPU several times); make test runs it whole without -race.
const raceDetector = true
