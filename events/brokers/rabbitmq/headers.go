package rabbitmq

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocqrs/cqrs/events/brokers"
)

// Headers the adapter maintains on the copies it publishes for delayed
// retries. They are removed from [brokers.Message.Headers] and from dead
// letters.
const (
	// HeaderAttempts counts the deliveries a message had before the copy
	// carrying it was published (for a delayed retry): the Attempt of its
	// next delivery is this count plus one plus RabbitMQ's count of the
	// copy's own redeliveries.
	HeaderAttempts = "x-cqrs-attempts"
	// HeaderTopic keeps the routing key of the original message on a
	// delayed copy, which comes back to the queue through the default
	// exchange under the queue's name.
	HeaderTopic = "x-cqrs-topic"
	// HeaderNotBefore is set on a delayed copy whose delay is longer than
	// the longest tier: the time (RFC 3339, UTC) before which the Source
	// sends it round the delay queues again rather than returning it.
	HeaderNotBefore = "x-cqrs-not-before"
	// headerDeliveryCount is the redelivery count of quorum queues (from
	// RabbitMQ 4.3, of failed deliveries only).
	headerDeliveryCount = "x-delivery-count"
	// headerAcquiredCount counts every return of a message to a quorum
	// queue (RabbitMQ 4.3 and later).
	headerAcquiredCount = "x-acquired-count"
)

// internalHeader reports whether a header is RabbitMQ's or the adapter's
// bookkeeping rather than the producer's.
func internalHeader(k string) bool {
	switch k {
	case HeaderAttempts, HeaderTopic, HeaderNotBefore, headerDeliveryCount, headerAcquiredCount, "x-death":
		return true
	}
	return strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-")
}

// flatten returns the producer's headers of t as strings: strings as they
// are, byte strings as text, numbers, booleans and times formatted, other
// values (arrays, tables) in Go syntax. Internal headers are left out.
func flatten(t amqp.Table) map[string]string {
	if len(t) == 0 {
		return nil
	}
	m := make(map[string]string, len(t))
	for k, v := range t {
		if !internalHeader(k) {
			m[k] = text(v)
		}
	}
	return m
}

// text formats one header value.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	if n, ok := integer(v); ok {
		return strconv.FormatInt(n, 10)
	}
	return fmt.Sprint(v)
}

// integer returns v as an int64 if it is an integer, or a string holding
// one.
func integer(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	case []byte:
		n, err := strconv.ParseInt(string(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// attempt returns the delivery attempt of d, from 1: the deliveries before
// its copy was published (HeaderAttempts), plus its own redeliveries as
// RabbitMQ counts them (a quorum queue's x-delivery-count, or from
// RabbitMQ 4.3 its x-acquired-count if higher; a classic queue only says
// whether it was redelivered), plus one.
func attempt(d *amqp.Delivery) int {
	var prior, redeliveries int64
	if n, ok := integer(d.Headers[HeaderAttempts]); ok && n > 0 {
		prior = n
	}
	for _, h := range [...]string{headerDeliveryCount, headerAcquiredCount} {
		if n, ok := integer(d.Headers[h]); ok && n > redeliveries {
			redeliveries = n
		}
	}
	if redeliveries == 0 && d.Redelivered {
		redeliveries = 1
	}
	return int(min(prior+redeliveries+1, 1<<31-1))
}

// headerString returns the header k of t as text, and whether it is set.
func headerString(t amqp.Table, k string) (string, bool) {
	v, ok := t[k]
	if !ok {
		return "", false
	}
	return text(v), true
}

// keyOf returns the message key: the brokers.HeaderKey header, its name
// matched ignoring ASCII case if it is not found as it is.
func keyOf(h map[string]string) string {
	if v, ok := h[brokers.HeaderKey]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, brokers.HeaderKey) {
			return v
		}
	}
	return ""
}

// copyOf returns the message to publish as a copy of d (a delayed retry, a
// dead letter): its body and properties, and its producer's headers plus
// extra. The expiration and user-id properties are not copied (a TTL would
// expire the copy; RabbitMQ refuses a user-id other than the connection's),
// and the copy is persistent.
func copyOf(d *amqp.Delivery, extra map[string]string) amqp.Publishing {
	h := make(amqp.Table, len(d.Headers)+len(extra))
	for k, v := range d.Headers {
		if !internalHeader(k) {
			h[k] = v
		}
	}
	for k, v := range extra {
		h[k] = v
	}
	return amqp.Publishing{
		Headers:         h,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}
