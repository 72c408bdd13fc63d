package outbox_test

import (
	"testing"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
		t.Helper()
		s := outbox.NewMemoryStore(outbox.MemoryOptions{Clock: clock})
		return s, s
	})
}
