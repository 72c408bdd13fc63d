package wire

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/gocqrs/cqrs/events"
)

// Registry maps event names to payload types, so that a consumer turns a
// message named "order.placed" into the [events.Notification] of the right
// payload type. Register every name with [Register] at start-up.
//
// A Registry is safe for concurrent use: decoding never blocks, and
// registration may happen concurrently with decoding and with other
// registrations (each registration copies the table, so it is meant for
// start-up, not for every message). The zero Registry is empty and ready to
// use. A Registry must not be copied after first use.
type Registry struct {
	mu      sync.Mutex // serialises writers
	entries atomic.Pointer[map[string]*entry]
}

// entry is one registered name: its payload type and typed functions that
// decode into it and check an event's payload against it.
type entry struct {
	name string
	// typ is events.Notification[P].
	typ reflect.Type
	// decode decodes payload (still encoded by c) into a Notification[P]
	// with metadata m and key, returned as events.Event.
	decode func(c Codec, payload []byte, m Meta, key string) (events.Event, error)
	// decodeJSON decodes a JSON body in one pass into a Notification[P],
	// for an envelope that names this entry. It reports false on any
	// problem, which the general path then reports.
	decodeJSON func(body []byte, env Envelope) (events.Event, bool)
	// accepts reports whether v may be the payload of an event of this name.
	accepts func(v any) bool
}

// Register registers name for notification events whose payload is a P: a
// message named name is decoded to an [events.Notification][P] (and,
// optionally, an encoder checks that events named name carry a P).
//
// Register returns an error matching [ErrInvalidName] if r is nil or name is
// empty, is not valid UTF-8 or contains a control character, and one
// matching [ErrDuplicateName] if name is already registered, whatever its
// type; the registry is then left unchanged. One payload type may be
// registered under several names (for instance "order.placed" and
// "order.placed.v1"). Collect the errors of several calls with [errors.Join].
func Register[P any](r *Registry, name string) error {
	if r == nil {
		return &Error{Op: "register", Name: name, Err: fmt.Errorf("%w: nil registry", ErrInvalidName)}
	}
	if err := checkName(name); err != nil {
		return &Error{Op: "register", Name: name, Err: err}
	}
	e := &entry{
		name:       name,
		typ:        reflect.TypeFor[events.Notification[P]](),
		decode:     decodeNotification[P],
		decodeJSON: decodeJSONNotification[P],
		accepts:    accepts[P],
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	if prev, ok := old[name]; ok {
		return &Error{Op: "register", Name: name, Err: fmt.Errorf("%w (for %v)", ErrDuplicateName, prev.typ)}
	}
	next := make(map[string]*entry, len(old)+1)
	maps.Copy(next, old)
	next[name] = e
	r.entries.Store(&next)
	return nil
}

// Names returns the registered names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(r.load()))
}

// Type returns the type a message named name decodes to
// ([events.Notification] of the registered payload type), and whether name
// is registered.
func (r *Registry) Type(name string) (reflect.Type, bool) {
	e := r.lookup(name)
	if e == nil {
		return nil, false
	}
	return e.typ, true
}

func (r *Registry) load() map[string]*entry {
	if p := r.entries.Load(); p != nil {
		return *p
	}
	return nil
}

func (r *Registry) lookup(name string) *entry {
	if r == nil {
		return nil
	}
	return r.load()[name]
}

// checkName reports why name cannot be an event name, or nil. Names travel
// in broker headers, so they must be non-empty valid UTF-8 without control
// characters.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return fmt.Errorf("%w: control character %U", ErrInvalidName, c)
		}
	}
	return nil
}

func decodeNotification[P any](c Codec, payload []byte, m Meta, key string) (events.Event, error) {
	n, err := notification[P](c, payload, m, key)
	if err != nil {
		return nil, err
	}
	return n, nil
}

// notification builds the Notification[P] of metadata m and key, decoding
// payload with c. A nil payload (absent from the body) leaves the zero P.
func notification[P any](c Codec, payload []byte, m Meta, key string) (events.Notification[P], error) {
	n := events.Notification[P]{
		ID:        m.ID,
		Name:      m.Name,
		Topic:     m.Topic,
		Timestamp: m.Timestamp,
		Key:       key,
	}
	if payload != nil {
		if err := c.UnmarshalPayload(payload, &n.Payload); err != nil {
			return events.Notification[P]{}, err
		}
	}
	return n, nil
}

func decodeJSONNotification[P any](body []byte, env Envelope) (events.Event, bool) {
	n, ok := notificationJSON[P](body, env)
	if !ok {
		return nil, false
	}
	return n, true
}

// notificationJSON decodes a JSON body in one pass into a Notification[P],
// with the metadata of the envelope and of the body merged, or reports
// false.
func notificationJSON[P any](body []byte, env Envelope) (events.Notification[P], bool) {
	var n events.Notification[P]
	bm, err := unmarshalJSON(body, &n.Payload, Meta{Name: env.Name, Topic: env.Topic})
	if err != nil {
		return events.Notification[P]{}, false
	}
	m, err := merge(env, bm)
	if err != nil {
		return events.Notification[P]{}, false
	}
	n.ID, n.Name, n.Topic, n.Timestamp, n.Key = m.ID, m.Name, m.Topic, m.Timestamp, env.Key
	return n, true
}

func accepts[P any](v any) bool {
	if v == nil {
		// A nil payload fits a P whose zero value is nil (an interface,
		// pointer, map, slice...).
		switch reflect.TypeFor[P]().Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
			return true
		default:
			return false
		}
	}
	_, ok := v.(P)
	return ok
}
