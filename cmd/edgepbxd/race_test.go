//go:build race

package main

// raceBuild makes TestMain build the daemon with -race too when the tests
// run with -race, so the race detector watches the real binary.
const raceBuild = true
