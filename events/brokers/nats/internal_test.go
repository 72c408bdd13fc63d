package nats

import (
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
)

func TestVersions(t *testing.T) {
	t.Parallel()
	for v, want := range map[string][2]bool{ // termTakesReason, releasesPromptly
		"2.9.10":        {false, false},
		"2.10.3":        {false, false},
		"2.10.4":        {true, false},
		"2.10.14":       {true, false},
		"2.10.15":       {true, true},
		"2.11.0-beta.1": {true, true},
		"2.15.3":        {true, true},
		"3.0.0":         {true, true},
		"":              {false, false},
		"garbage":       {false, false},
	} {
		assert.Equal(t, want[0], termTakesReason(v), "termTakesReason(%q)", v)
		assert.Equal(t, want[1], releasesPromptly(v), "releasesPromptly(%q)", v)
	}
}

func TestSubjectCovers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		have, pattern string
		want          bool
	}{
		{"orders", "orders", true},
		{"orders", "orders.x", false},
		{"orders.*", "orders.x", true},
		{"orders.*", "orders.*", true},
		{"orders.*", "orders.>", false},
		{"orders.*", "orders.x.y", false},
		{"orders.>", "orders.x.y", true},
		{"orders.>", "orders.*", true},
		{"orders.>", "orders", false},
		{">", "a.b.c", true},
		{"*.b", "a.b", true},
		{"a.b", "a.*", false},
	} {
		assert.Equal(t, c.want, subjectCovers(c.have, c.pattern), "subjectCovers(%q, %q)", c.have, c.pattern)
	}
}

func TestCheckSubject(t *testing.T) {
	t.Parallel()
	for s, wild := range map[string]bool{"a": true, "a.b": true, "a.*": true, "a.>": true, "*.b.>": true} {
		assert.NoError(t, checkSubject(s, wild), s)
	}
	for _, s := range []string{"", "a..b", ".a", "a.", "a b", "a.>.b", "a.b*", "a.\tb"} {
		assert.Error(t, checkSubject(s, true), "%q", s)
	}
	assert.Error(t, checkSubject("a.*", false), "no wildcard where one is not allowed")
	assert.Error(t, checkSubject("a.>", false))
}

func TestCheckHeader(t *testing.T) {
	t.Parallel()
	assert.NoError(t, checkHeader("x-tenant", "acme corp"))
	for name, value := range map[string]string{
		"":            "v",
		"a b":         "v",
		"a:b":         "v",
		"é":           "v",
		"Nats-Msg-Id": "v",
		"nats-x":      "v",
		"x-1":         "a\r\nb",
		"x-2":         " padded",
		"x-3":         "padded\t",
	} {
		assert.ErrorIs(t, checkHeader(name, value), ErrInvalidMessage, "%q: %q", name, value)
	}
}

func TestFlatten(t *testing.T) {
	t.Parallel()
	h, key := flatten(natsgo.Header{
		"event-name":  {"order.placed", "ignored"},
		"Nats-Msg-Id": {"id"},
		"event-key":   {"k-1"},
		"Event-Key":   {"other"},
		"x-empty":     {},
	})
	assert.Equal(t, map[string]string{"event-name": "order.placed"}, h)
	assert.Equal(t, "k-1", key, "the exact name wins")

	_, key = flatten(natsgo.Header{"Event-Key": {"b"}, "EVENT-KEY": {"a"}})
	assert.Equal(t, "a", key, "else the first name in sorted order")
	h, key = flatten(nil)
	assert.Empty(t, h)
	assert.Empty(t, key)
}
