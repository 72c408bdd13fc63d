package outbox

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	for attempt, want := range map[int]time.Duration{
		-1: time.Second, 0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		4: 8 * time.Second, 5: 10 * time.Second, 100: 10 * time.Second, math.MaxInt: 10 * time.Second,
	} {
		assert.Equal(t, want, b.delay(attempt, 0.99), "attempt %d", attempt)
	}

	huge := Backoff{Base: time.Duration(math.MaxInt64 / 3), Max: time.Duration(math.MaxInt64)}
	assert.Equal(t, time.Duration(math.MaxInt64), huge.delay(10, 0), "no overflow near the largest duration")

	j := Backoff{Base: time.Second, Max: time.Minute, Jitter: 0.5}
	assert.Equal(t, 4*time.Second, j.delay(3, 0), "u = 0 keeps the whole delay")
	assert.Equal(t, 3*time.Second, j.delay(3, 0.5))
	assert.Equal(t, 2*time.Second, j.delay(3, 1), "u = 1 removes the Jitter fraction")
	for range 100 {
		d := j.Delay(3)
		assert.GreaterOrEqual(t, d, 2*time.Second)
		assert.LessOrEqual(t, d, 4*time.Second)
	}
}

func TestBackoffValidate(t *testing.T) {
	t.Parallel()
	for _, b := range []Backoff{
		{Base: 0, Max: time.Second},
		{Base: time.Second, Max: time.Millisecond},
		{Base: time.Second, Max: time.Second, Jitter: -0.1},
		{Base: time.Second, Max: time.Second, Jitter: 1.1},
		{Base: time.Second, Max: time.Second, Jitter: math.NaN()},
	} {
		errs := b.validate(nil)
		assert.Len(t, errs, 1, "%+v", b)
	}
	assert.Empty(t, Backoff{Base: time.Second, Max: time.Second, Jitter: 1}.validate(nil))
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "short", truncate("short"))
	long := strings.Repeat("é", MaxErrorLen) // two bytes each
	got := truncate(long)
	assert.LessOrEqual(t, len(got), MaxErrorLen)
	assert.Equal(t, strings.Repeat("é", MaxErrorLen/2), got)
	odd := "x" + long
	got = truncate(odd)
	assert.Equal(t, "x"+strings.Repeat("é", MaxErrorLen/2-1), got, "a split rune is dropped")
}
