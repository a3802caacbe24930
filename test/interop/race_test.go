//go:build race

package interop

// Under go test -race the diskless binary is built with -race too, so the
// real peers drive it with the race detector on.
func init() { raceEnabled = true }
