package rabbitmq

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"

	"github.com/gocqrs/cqrs/events/wire"
)

func TestFlatten(t *testing.T) {
	t.Parallel()
	ts := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	got := flatten(amqp.Table{
		"s": "text", "b": []byte("bytes"), "n": int32(-7), "u": uint16(7), "i": int64(1 << 40),
		"f": 1.5, "f32": float32(0.25), "t": true, "ts": ts, "nil": nil,
		"a": []any{"x", int32(1)}, "d": amqp.Decimal{Scale: 2, Value: 150},
		"x-death": []any{amqp.Table{"count": int64(1)}}, "x-first-death-queue": "q", "x-last-death-reason": "expired",
		"x-delivery-count": int64(2), "x-acquired-count": int64(2), HeaderAttempts: "3", HeaderTopic: "orders", HeaderNotBefore: "2030-01-01T00:00:00Z",
	})
	assert.Equal(t, map[string]string{
		"s": "text", "b": "bytes", "n": "-7", "u": "7", "i": "1099511627776",
		"f": "1.5", "f32": "0.25", "t": "true", "ts": "2030-01-02T02:04:05Z", "nil": "",
		"a": "[x 1]", "d": "{2 150}",
	}, got)
	assert.Nil(t, flatten(nil))
}

func TestAttempt(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		d    amqp.Delivery
		want int
	}{
		{"first", amqp.Delivery{}, 1},
		{"classic redelivery", amqp.Delivery{Redelivered: true}, 2},
		{"quorum redeliveries", amqp.Delivery{Redelivered: true, Headers: amqp.Table{"x-delivery-count": int64(3)}}, 4},
		{"delayed copy", amqp.Delivery{Headers: amqp.Table{HeaderAttempts: "4"}}, 5},
		{"delayed copy redelivered", amqp.Delivery{Redelivered: true, Headers: amqp.Table{HeaderAttempts: "4", "x-delivery-count": int32(2)}}, 7},
		{"acquired count", amqp.Delivery{Redelivered: true, Headers: amqp.Table{"x-delivery-count": int64(1), "x-acquired-count": int64(3)}}, 4},
		{"garbage", amqp.Delivery{Headers: amqp.Table{HeaderAttempts: "many", "x-delivery-count": "-3"}}, 1},
	} {
		assert.Equal(t, tt.want, attempt(&tt.d), tt.name)
	}
}

func TestTier(t *testing.T) {
	t.Parallel()
	topo := Topology{RetryDelays: []time.Duration{time.Second, 5 * time.Second}}
	assert.Equal(t, time.Second, topo.tier(time.Millisecond))
	assert.Equal(t, time.Second, topo.tier(time.Second))
	assert.Equal(t, 5*time.Second, topo.tier(1001*time.Millisecond))
	assert.Equal(t, 5*time.Second, topo.tier(time.Hour), "the longest tier, round again")
}

func TestCopyOf(t *testing.T) {
	t.Parallel()
	d := amqp.Delivery{
		Headers:    amqp.Table{"event-key": "k", "n": int32(1), "x-death": []any{}, HeaderAttempts: "2"},
		Expiration: "60000", UserId: "someone", MessageId: "id", Type: "order.placed", Body: []byte("b"),
	}
	p := copyOf(&d, map[string]string{"dead-letter-reason": "rejected"})
	assert.Equal(t, amqp.Table{"event-key": "k", "n": int32(1), "dead-letter-reason": "rejected"}, p.Headers)
	assert.Empty(t, p.Expiration)
	assert.Empty(t, p.UserId)
	assert.Equal(t, amqp.Persistent, p.DeliveryMode)
	assert.Equal(t, "id", p.MessageId)
	assert.Equal(t, []byte("b"), p.Body)
}

func TestKeyOf(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "k", keyOf(map[string]string{"event-key": "k"}))
	assert.Equal(t, "k", keyOf(map[string]string{"Event-Key": "k"}))
	assert.Empty(t, keyOf(nil))
}

func TestPublishingShortStrings(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("c", 256)
	p, err := publishing(wire.Envelope{Topic: "t", CorrelationID: long, Name: "n", ContentType: "application/json"})
	assert.NoError(t, err)
	assert.Empty(t, p.CorrelationId, "too long for the property")
	assert.Equal(t, long, p.Headers[wire.HeaderCorrelationID], "the header carries it")
	assert.Equal(t, "n", p.Type)
	assert.Empty(t, p.MessageId, "no event id")
	assert.True(t, p.Timestamp.IsZero())

	_, err = publishing(wire.Envelope{Topic: "t", Headers: map[string]string{long: "v"}})
	assert.ErrorContains(t, err, "header name")
}
