package saga_test

import (
	"testing"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

func TestMemoryStoreConformance(t *testing.T) {
	t.Parallel()
	sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
		t.Helper()
		s := saga.NewMemoryStore(saga.MemoryOptions{Clock: clock})
		return s, s
	})
}
