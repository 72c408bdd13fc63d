package testenv

import (
	"os"
	"testing"
)

// CIEnv is the environment variable that, when set, makes an unreachable
// service fail the tests instead of skipping them.
const CIEnv = "CI"

// URL returns the value of the environment variable env, or def when it is
// unset or empty.
func URL(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// Unavailable ends tb because the service it needs, named what, at the
// address in the environment variable env (default def), cannot be
// reached: it fails tb when CI is set, and skips it otherwise, with a
// message naming env.
func Unavailable(tb testing.TB, what, env, def string, err error) {
	tb.Helper()
	if os.Getenv(CIEnv) != "" {
		tb.Fatalf("%s at %s=%q is unreachable, and %s is set: %v", what, env, URL(env, def), CIEnv, err)
	}
	tb.Skipf("%s is unreachable (set %s to its address; default %s): %v", what, env, def, err)
}
