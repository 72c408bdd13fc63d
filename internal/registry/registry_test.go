package registry_test

import (
	"testing"
	"unsafe"

	"github.com/gocqrs/cqrs/internal/registry"
)

// Every Send reads a Request: its size keeps it on cache lines of its own.
func TestRequestFillsCacheLines(t *testing.T) {
	t.Parallel()
	if s := unsafe.Sizeof(registry.Request[int, string]{}); s%64 != 0 {
		t.Errorf("a Request takes %d bytes, not a multiple of 64", s)
	}
}
