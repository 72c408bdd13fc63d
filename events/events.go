package events

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Event is any value a handler emits. Domain events are plain Go values
// (usually structs) and are routed by their exact dynamic type; a value that
// implements [NotificationEvent] is also sent to the configured [Publisher].
type Event = any

// Handler handles events of type E. The mediator calls Handle from several
// goroutines at once when events are dispatched in parallel, so a handler must
// be safe for concurrent use; it keeps no per-call state.
//
// The events Handle returns are follow-ups: the mediator dispatches them after
// Handle returns, and only if err is nil.
type Handler[E any] interface {
	Handle(ctx context.Context, event E) ([]Event, error)
}

// HandlerFunc adapts a function to a [Handler].
type HandlerFunc[E any] func(ctx context.Context, event E) ([]Event, error)

// Handle calls f(ctx, event).
func (f HandlerFunc[E]) Handle(ctx context.Context, event E) ([]Event, error) { return f(ctx, event) }

// DefaultTopic is the topic [NewNotification] gives a notification event.
const DefaultTopic = "output_topic"

// NotificationEvent is an event meant for other processes: when a handler
// emits one, the mediator hands it to the configured [Publisher]. [Notification]
// implements it.
type NotificationEvent interface {
	// EventID identifies the event; a consumer uses it to drop duplicates.
	EventID() uuid.UUID
	// EventName names the kind of event, e.g. "order.placed".
	EventName() string
	// EventTopic is the destination topic, queue or subject.
	EventTopic() string
	// EventTimestamp is when the event was created, in UTC.
	EventTimestamp() time.Time
	// EventPayload is the body to serialise.
	EventPayload() any
}

// Keyed is implemented by a [NotificationEvent] that has a partition key;
// transports and the outbox keep the events of one key in order.
type Keyed interface {
	EventKey() string
}

// Notification is the standard [NotificationEvent], with a typed payload.
// Bind a handler to Notification[P] to consume it in process with an
// EventMediator.
type Notification[P any] struct {
	ID        uuid.UUID `json:"event_id"`
	Name      string    `json:"event_name"`
	Topic     string    `json:"topic"`
	Timestamp time.Time `json:"event_timestamp"`
	Payload   P         `json:"payload"`
	// Key is the partition key (e.g. the aggregate's id): events with the
	// same key leave the process, and reach consumers on brokers that
	// partition, in the order they were emitted. It travels beside the body,
	// not in it. Empty means no ordering requirement.
	Key string `json:"-"`
}

// NewNotification returns a notification event with a new UUIDv7 ID (time
// ordered, so outbox and broker indexes stay compact), the current UTC time,
// [DefaultTopic] and the given name and payload. Like [uuid.New] it panics
// only if the system's random source fails.
func NewNotification[P any](name string, payload P) Notification[P] {
	return Notification[P]{
		ID:        uuid.Must(uuid.NewV7()),
		Name:      name,
		Topic:     DefaultTopic,
		Timestamp: time.Now().UTC(),
		Payload:   payload,
	}
}

// WithTopic returns a copy of n sent to topic.
func (n Notification[P]) WithTopic(topic string) Notification[P] {
	n.Topic = topic
	return n
}

// WithKey returns a copy of n with partition key key.
func (n Notification[P]) WithKey(key string) Notification[P] {
	n.Key = key
	return n
}

// EventKey implements [Keyed].
func (n Notification[P]) EventKey() string { return n.Key }

// EventID implements [NotificationEvent].
func (n Notification[P]) EventID() uuid.UUID { return n.ID }

// EventName implements [NotificationEvent].
func (n Notification[P]) EventName() string { return n.Name }

// EventTopic implements [NotificationEvent].
func (n Notification[P]) EventTopic() string { return n.Topic }

// EventTimestamp implements [NotificationEvent].
func (n Notification[P]) EventTimestamp() time.Time { return n.Timestamp }

// EventPayload implements [NotificationEvent].
func (n Notification[P]) EventPayload() any { return n.Payload }
