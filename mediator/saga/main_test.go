package saga_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a
// drive starts none that outlives it, renewals included.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
