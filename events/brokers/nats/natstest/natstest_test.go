package natstest_test

import (
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
)

func TestRestartKeepsTheAddress(t *testing.T) {
	t.Parallel()
	s := natstest.Run(t)
	nc, err := natsgo.Connect(s.URL())
	require.NoError(t, err)
	nc.Close()
	addr := s.Addr()
	s.Stop()
	_, err = natsgo.Connect(s.URL())
	require.Error(t, err, "stopped")
	s.Start()
	require.Equal(t, addr, s.Addr())
	nc, err = natsgo.Connect(s.URL())
	require.NoError(t, err)
	nc.Close()
}
