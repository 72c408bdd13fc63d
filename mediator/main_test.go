package mediator_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: Send
// must start no goroutine that outlives it, even when cancelled.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
