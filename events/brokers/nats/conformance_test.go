package nats_test

import (
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/brokertest"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
)

// features are the adapter's: the server counts deliveries
// (NumDelivered), and drops a second publish of an event id within the
// stream's duplicate window (Nats-Msg-Id).
var features = brokertest.Features{CountsRedeliveries: true, DeduplicatesPublishes: true}

// TestConformance holds the adapter to the conformance kit against the
// server of NATS_URL.
//
// Its consumers have a short AckWait, so that the run also passes on
// servers that lose a message given back (Nak) while no pull request is
// waiting until its AckWait runs out (nats-server 2.9, the one Debian
// packages, does: see the package documentation). TestConformanceEmbedded
// runs the kit on a current server with the default AckWait, where a
// message given back comes back at once.
func TestConformance(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	runConformance(t, nc, 3*time.Second, brokertest.DefaultTimeout)
}

// TestConformanceEmbedded holds the adapter to the conformance kit against
// a current nats-server embedded in the test, with the default AckWait
// (30s) and a kit timeout well below it: messages given back by Close or
// at shutdown must come back at once, not when AckWait runs out.
func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	e := natstest.Run(t)
	nc, err := natsgo.Connect(e.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	runConformance(t, nc, 0, 10*time.Second)
}

func runConformance(t *testing.T, nc *natsgo.Conn, ackWait, timeout time.Duration) {
	t.Helper()
	sender := newSender(t, nc, nats.SenderConfig{})
	brokertest.Run(t, brokertest.Transport{
		Features: features,
		Timeout:  timeout,
		NewTopic: func(t *testing.T) brokertest.Topic {
			t.Helper()
			topo := topology(t, nc)
			topo.AckWait = ackWait
			provision(t, nc, topo) // the subscription exists before anything is sent
			return brokertest.Topic{
				Name:        topo.Subjects[0],
				Sender:      sender,
				Subscriber:  newSubscriber(t, nc, topo, nats.SubscriberConfig{}),
				DeadLetters: newSubscriber(t, nc, deadLetterReader(topo), nats.SubscriberConfig{}),
			}
		},
	})
}
