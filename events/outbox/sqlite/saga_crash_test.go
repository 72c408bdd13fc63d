//go:build unix

package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/mediator/saga"
)

// The environment of the child process of TestSagaCrashRecovery.
const (
	envSagaChild  = "GOCQRS_SQLITE_SAGA_CHILD"  // the directory of the files
	envSagaID     = "GOCQRS_SQLITE_SAGA_ID"     // the ID of the saga the child starts
	envSagaRefuse = "GOCQRS_SQLITE_SAGA_REFUSE" // set: the saga's last step will fail
)

const sagaCrashLease = time.Minute

// invocationLog appends the key of every invocation to the file calls.log
// of dir, synced, so that it survives the process: it tells how many times
// each step ran, across processes, whatever became of its transaction.
func invocationLog(tb testing.TB, dir string) func(key string) error {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "calls.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, f.Close()) })
	var mu sync.Mutex
	return func(key string) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := f.WriteString(key + "\n"); err != nil {
			return err
		}
		return f.Sync()
	}
}

func readInvocations(t *testing.T, dir string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls.log"))
	require.NoError(t, err)
	out := make(map[string]int)
	for line := range strings.Lines(string(b)) {
		out[strings.TrimSpace(line)]++
	}
	return out
}

// TestSagaCrashChild is the child process of TestSagaCrashRecovery; it
// does nothing unless run by it. It starts the saga and runs it until step
// 3, which applies its effect, tells the parent, and never returns: the
// parent kills the process with the step's transaction open.
func TestSagaCrashChild(t *testing.T) {
	dir := os.Getenv(envSagaChild)
	if dir == "" {
		t.Skip("the child process of the saga crash test")
	}
	id, err := uuid.Parse(os.Getenv(envSagaID))
	require.NoError(t, err)
	ctx := context.Background()
	db, store := openTripDB(t, filepath.Join(dir, "sagas.db"), nil)
	parent := os.NewFile(3, "parent") // the pipe to the parent
	def := tripSaga(invocationLog(t, dir), func(ctx context.Context, key string) error {
		if key != id.String()+"/"+stepName(2) {
			return nil
		}
		// Step 2's checkpoint committed before this step began; this
		// step's effect is written but not committed.
		if _, err := fmt.Fprintln(parent, "in step 3"); err != nil {
			return err
		}
		<-ctx.Done() // never: killed here
		return ctx.Err()
	})
	o := tripOrchestrator(t, store, db, "child", sagaCrashLease, nil, def)
	_, err = saga.Execute(ctx, o, def, trip{Refuse: os.Getenv(envSagaRefuse) != ""}, saga.WithID(id))
	t.Fatalf("the saga ended in the child: %v", err)
}

// offsetClock is the system clock moved forward by an offset the test
// sets: the parent's view of time once the child's lease has expired.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// TestSagaCrashRecovery runs a saga of four steps in a child process and
// kills it with SIGKILL in step 3, right after step 2's checkpoint
// committed. This process, as a new orchestrator with another owner,
// recovers the saga once the child's lease has expired, and finishes it:
// completes it, or, when its last step fails, compensates it. Each step
// writes its effect in the transaction of its checkpoint, keyed by its
// idempotency key: step 3 runs twice (in the child, then here), but every
// effect is applied once, the killed transaction's having left nothing.
func TestSagaCrashRecovery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, refuse := range []bool{false, true} {
		name := "completes"
		if refuse {
			name = "compensates"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSagaCrash(t, refuse)
		})
	}
}

func testSagaCrash(t *testing.T, refuse bool) {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	clock := &offsetClock{}
	db, store := openTripDB(t, filepath.Join(dir, "sagas.db"), clock) // the schema exists before the child runs
	id := uuid.Must(uuid.NewV7())

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Close()) }()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSagaCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envSagaChild+"="+dir, envSagaID+"="+id.String())
	if refuse {
		cmd.Env = append(cmd.Env, envSagaRefuse+"=1")
	}
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	require.NoError(t, w.Close()) // the child holds the write end now
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child ended before step 3: %v\n%s", err, stderr.String())
	}
	require.Equal(t, "in step 3\n", line)
	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no rollback, no release, no cleanup
	require.ErrorContains(t, cmd.Wait(), "killed")

	// The child died holding the lease, after step 2's checkpoint; the
	// effect of step 3, uncommitted, is gone.
	var integrity string
	require.NoError(t, db.SQL().QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&integrity))
	require.Equal(t, "ok", integrity)
	rec, err := store.Load(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, saga.Running, rec.Status)
	assert.Equal(t, 2, rec.Step)
	assert.Equal(t, int64(3), rec.Version, "created, then two checkpoints")
	assert.Equal(t, "child", rec.LeaseOwner)
	assert.Equal(t, keys(id, stepName(0), stepName(1)), readEffects(t, db))
	log, err := store.Log(ctx, id)
	require.NoError(t, err)
	require.Len(t, log, 2)
	for _, e := range log {
		assert.Equal(t, saga.Succeeded, e.Outcome)
		assert.Equal(t, "child", e.Owner)
	}

	// Another orchestrator leaves the saga alone while the lease lives,
	// and takes it over once it has expired.
	def := tripSaga(invocationLog(t, dir), nil)
	o := tripOrchestrator(t, store, db, "parent", sagaCrashLease, clock, def)
	n, err := o.Recover(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a live lease is never taken over")
	clock.Advance(sagaCrashLease + time.Second)
	n, err = o.Recover(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	snap, err := saga.Load(ctx, o, def, id)
	require.NoError(t, err)
	assert.Empty(t, snap.Record.LeaseOwner)
	assert.Zero(t, snap.Record.Attempts, "progress resets the attempts")
	steps := []string{stepName(0), stepName(1), stepName(2), stepName(3)}
	invocations := keys(id, steps...)
	invocations[id.String()+"/"+stepName(2)] = 2 // in the child, then here
	log, err = store.Log(ctx, id)
	require.NoError(t, err)
	if !refuse {
		assert.Equal(t, saga.Completed, snap.Record.Status)
		assert.Equal(t, steps, snap.State.Done, "each step's change to the state checkpointed once")
		assert.Equal(t, keys(id, steps...), readEffects(t, db), "every effect applied once")
		require.Len(t, log, 4)
	} else {
		assert.Equal(t, saga.Compensated, snap.Record.Status)
		assert.Equal(t, []string{
			stepName(0), stepName(1), stepName(2), "undo " + stepName(2), "undo " + stepName(1), "undo " + stepName(0),
		}, snap.State.Done)
		compensations := []string{stepName(2) + "/compensate", stepName(1) + "/compensate", stepName(0) + "/compensate"}
		assert.Equal(t, keys(id, append(steps[:3:3], compensations...)...), readEffects(t, db),
			"every effect applied once; the failed step's rolled back")
		for k, v := range keys(id, compensations...) {
			invocations[k] = v
		}
		require.Len(t, log, 7)
		assert.Equal(t, saga.StepFailed, log[3].Outcome)
		assert.Equal(t, []string{errRefused.Error()}, log[3].Errors)
		for _, e := range log[4:] {
			assert.Equal(t, saga.Compensation, e.Phase)
			assert.Equal(t, saga.Succeeded, e.Outcome)
		}
	}
	for _, e := range log[2:] {
		assert.Equal(t, "parent", e.Owner)
	}
	assert.Equal(t, invocations, readInvocations(t, dir), "step 3 ran twice, every other invocation once")
}
