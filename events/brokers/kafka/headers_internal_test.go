package kafka

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/wire"
)

// The record headers are those of wire.ToHeaders, and so are its errors.
func TestRecordHeaders(t *testing.T) {
	t.Parallel()
	id := uuid.Must(uuid.NewV7())
	ts := time.Date(2024, 5, 1, 12, 34, 56, 123456789, time.FixedZone("x", 3600))
	cases := map[string]wire.Envelope{
		"empty":         {},
		"full":          {ID: id, Name: "order.placed", Timestamp: ts, CorrelationID: "c", CausationID: "d", ContentType: "application/json", Headers: map[string]string{"traceparent": "tp", "x-b": "2", "X-A": "1", "empty": ""}},
		"id only":       {ID: id},
		"whole second":  {Name: "n", Timestamp: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)},
		"reserved":      {Name: "n", Headers: map[string]string{"Correlation-ID": "x"}},
		"year 10000":    {Name: "n", Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"year 0 in UTC": {Name: "n", Timestamp: time.Date(1, 1, 1, 0, 30, 0, 0, time.FixedZone("y", 3600))},
	}
	for name, env := range cases {
		want, wantErr := wire.ToHeaders(env)
		hs, _, names, ok := appendHeaders(nil, nil, &env)
		if wantErr != nil {
			assert.False(t, ok, "%s: refused, as ToHeaders does (%v)", name, wantErr)
			continue
		}
		require.True(t, ok, name)
		got := make(map[string]string, len(hs))
		n := 0
		for _, h := range hs {
			got[h.Key] = string(h.Value)
			n += len(h.Key)
		}
		assert.Equal(t, n, names, "%s: the bytes of the names", name)
		if len(want) == 0 {
			want = map[string]string{}
		}
		assert.Equal(t, want, got, name)
	}
}
