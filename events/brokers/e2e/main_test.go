package e2e_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every relay,
// consumer, client, proxy and embedded server they start must have ended.
// The helper processes check themselves the same way when they stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
