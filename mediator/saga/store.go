package saga

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Status is where a saga is in its life. The numeric values are persisted
// by SQL stores (a smallint column) and never change.
type Status int8

const (
	// Running means steps are being run forward. Recoverable.
	Running Status = 1
	// Compensating means a step failed and the completed steps are being
	// compensated. Recoverable.
	Compensating Status = 2
	// Completed means every step succeeded. Terminal.
	Completed Status = 3
	// Compensated means a step failed and every completed step was compensated
	// (or there was nothing to compensate). Terminal.
	Compensated Status = 4
	// Failed means a compensation still failed after its last retry. The saga
	// stopped there, the steps before it not yet compensated; it waits
	// for a human ([Orchestrator.Resume] retries the compensation).
	// Terminal for the engine.
	Failed Status = 5
	// Halted means recovery gave up (the attempt limit was reached, or the
	// saga's state could not be decoded). It waits for a human
	// ([Orchestrator.Resume]). Terminal for the engine.
	Halted Status = 6
)

// String returns "running", "compensating", "completed", "compensated",
// "failed" or "halted".
func (s Status) String() string {
	switch s {
	case Running:
		return "running"
	case Compensating:
		return "compensating"
	case Completed:
		return "completed"
	case Compensated:
		return "compensated"
	case Failed:
		return "failed"
	case Halted:
		return "halted"
	default:
		return fmt.Sprintf("Status(%d)", int8(s))
	}
}

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool { return s >= Running && s <= Halted }

// Active reports whether the engine still drives sagas in status s
// (running or compensating): only they are leased, renewed and recovered.
func (s Status) Active() bool { return s == Running || s == Compensating }

// NeedsAttention reports whether s is a status only a human gets a saga
// out of: failed or halted.
func (s Status) NeedsAttention() bool { return s == Failed || s == Halted }

// Phase tells an action from a compensation. Persisted as a smallint.
type Phase int8

const (
	// Forward is a step's action (or its fallback's).
	Forward Phase = 1
	// Compensation is a step's compensation.
	Compensation Phase = 2
)

// String returns "forward" or "compensation".
func (p Phase) String() string {
	switch p {
	case Forward:
		return "forward"
	case Compensation:
		return "compensation"
	default:
		return fmt.Sprintf("Phase(%d)", int8(p))
	}
}

// Outcome is how a step invocation ended. Persisted as a smallint.
type Outcome int8

const (
	// Succeeded means the action (or compensation) returned without error and
	// its checkpoint was written.
	Succeeded Outcome = 1
	// StepFailed means the action failed (its fallback too, if it has one), or
	// the compensation failed on every attempt.
	StepFailed Outcome = 2
	// Interrupted means the driver stopped during the invocation (its context
	// was cancelled, the stream's consumer stopped, the store failed) and
	// released the saga; it will run again on recovery.
	Interrupted Outcome = 3
	// HaltedOutcome means recovery gave up on the saga; the entry's Errors say
	// why.
	HaltedOutcome Outcome = 4
)

// String returns "succeeded", "failed", "interrupted" or "halted".
func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case StepFailed:
		return "failed"
	case Interrupted:
		return "interrupted"
	case HaltedOutcome:
		return "halted"
	default:
		return fmt.Sprintf("Outcome(%d)", int8(o))
	}
}

// Record is a saga as stored.
type Record struct {
	// ID identifies the saga; it is part of every idempotency key.
	ID uuid.UUID
	// Name is the name of the saga's definition.
	Name string
	// Status is where the saga is.
	Status Status
	// Step is the saga's cursor. Running: the index of the next step to
	// run, which is also the number of steps completed. Compensating and
	// Failed: the number of completed steps not yet compensated (step
	// Step-1 is compensated next). Completed: the number of steps.
	// Compensated: 0. Halted: the cursor of the status it was halted in.
	Step int
	// State is the saga's state, encoded by the definition's codec, as of
	// the last checkpoint.
	State []byte
	// Version is 1 when the saga is created and grows by one with every
	// Save and Claim: a writer that read version v may write only while the
	// version is still v.
	Version int64
	// Attempts counts the recovery claims since the saga last made
	// progress (a checkpoint written by a driver resets it).
	Attempts int
	// LeaseOwner is the driver that holds the saga, or "" when it is not
	// leased.
	LeaseOwner string
	// LeaseUntil is when the lease expires; after it the saga may be
	// claimed by a recoverer. Zero when not leased.
	LeaseUntil time.Time
	// CreatedAt is the store's clock reading when the saga was created.
	CreatedAt time.Time
	// UpdatedAt is the store's clock reading at the last Save or Claim.
	UpdatedAt time.Time
}

// Entry is one line of a saga's step log: how one invocation of a step's
// action or compensation ended, or why recovery halted the saga.
type Entry struct {
	// Seq orders the entries of a saga; assigned by the store, positive
	// and increasing in append order (not necessarily contiguous).
	Seq int64
	// Step is the step's name ("" in a halt entry written before any step
	// was reached).
	Step string
	// Index is the step's position in the definition, from 0.
	Index int
	// Phase is forward or compensation.
	Phase Phase
	// Fallback reports that the step's fallback ran (and, for a forward
	// entry that succeeded, that it is the fallback's compensation that
	// undoes the step).
	Fallback bool
	// Outcome is how the invocation ended.
	Outcome Outcome
	// Attempts counts the attempts of this invocation: 1 for an action (2
	// when a fallback ran), up to the retry limit for a compensation.
	Attempts int
	// Errors lists every error of the invocation, oldest first (for a
	// forward step with a fallback: the primary's, then the fallback's;
	// for a compensation: one per failed attempt).
	Errors []string
	// Owner is the driver that wrote the entry.
	Owner string
	// StartedAt and FinishedAt are the driver's clock readings when the
	// invocation started and ended.
	StartedAt  time.Time
	FinishedAt time.Time
}

// Checkpoint is a write to a saga: its new status, cursor, state, lease
// and the log entries that explain the change.
type Checkpoint struct {
	// ID is the saga.
	ID uuid.UUID
	// Version is the version the writer last read or wrote; the write
	// applies only if the saga's version is still Version, and makes it
	// Version+1.
	Version int64
	// Status, Step, State and Attempts replace the saga's.
	Status   Status
	Step     int
	State    []byte
	Attempts int
	// Owner holds the lease after the write, for Lease from the store's
	// now. An empty Owner releases the lease (Lease is then ignored).
	Owner string
	Lease time.Duration
	// Log is appended to the saga's step log, in order, in the same write.
	Log []Entry
}

// Filter selects sagas for [Store.List].
type Filter struct {
	// Statuses keeps the sagas in one of these statuses; empty keeps all.
	Statuses []Status
	// Names keeps the sagas of these definitions; empty keeps all.
	Names []string
	// Recoverable keeps only the sagas Claim would take now: active, with
	// their lease released or expired.
	Recoverable bool
	// After keeps the sagas whose ID sorts after it (uuid.Nil: from the
	// start). Pass the last ID returned to read the next page.
	After uuid.UUID
	// Limit caps the number of sagas returned; it must be at least 1.
	Limit int
}

// Store keeps sagas and their step logs. A Store is safe for concurrent
// use, by several orchestrators in several processes. Every method honours
// ctx.
//
// Transactions: Create and Save write in the transaction ctx carries, if
// it carries one of the store's database (placed there by the database's
// outbox.Transactor), so that a step's own writes, its outbox rows and its
// checkpoint commit together; without one they commit on their own. Every
// write is atomic: all of it or nothing. The engine never calls Claim,
// Renew, List or Purge with a transaction in ctx.
//
// Time: a store reads the time only from the clock it was given (SQL
// stores: never from the database server), so that leases can be tested.
//
// A store on a SQL database can do each method in one round trip: Save is
// an UPDATE … SET …, version = version + 1 WHERE id = $1 AND version = $2
// and an INSERT of the log entries from the same statement (a CTE), Claim
// an UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING ….
// Only on failure may a second query tell a conflict from a missing saga.
type Store interface {
	// Create stores rec as a new saga: Version 1, Attempts 0, CreatedAt and
	// UpdatedAt now, and, when rec.LeaseOwner is set, LeaseUntil now plus
	// lease; rec's other fields as given (Version, Attempts, LeaseUntil,
	// CreatedAt and UpdatedAt are ignored). It returns an error matching
	// [ErrExists] if the ID is taken, and one matching
	// [ErrInvalidArgument] (see [ValidateRecord]) for a zero ID, an empty
	// name, an invalid status, a negative step, or a lease owner with a
	// lease that is not positive.
	Create(ctx context.Context, rec Record, lease time.Duration) error
	// Load returns the saga, or an error matching [ErrNotFound].
	Load(ctx context.Context, id uuid.UUID) (Record, error)
	// Save applies cp if the saga's version is cp.Version: Version+1,
	// Status, Step, State and Attempts replaced, the lease set or released
	// as cp.Owner says, UpdatedAt now, cp.Log appended with new Seqs.
	// Otherwise it changes nothing and returns a *[ConflictError]
	// (matching [ErrConflict]), or an error matching [ErrNotFound] when
	// the saga does not exist. Invalid arguments (see [ValidateCheckpoint])
	// match [ErrInvalidArgument].
	//
	// A stale writer, one whose version was overtaken by a Save or a Claim
	// of someone else, always gets the conflict, so two drivers can never
	// both move a saga on.
	//
	// The store may keep cp.State and the entries' Errors slices, which the
	// caller never modifies afterwards; it must copy the entries
	// themselves (the caller reuses cp.Log).
	Save(ctx context.Context, cp Checkpoint) error
	// Renew extends the lease of an active (running or compensating) saga
	// that owner holds to now plus lease, without changing its version. It
	// returns an error matching [ErrLeaseLost] if owner does not hold it
	// (another owner claimed it, it was released, or it is no longer
	// active), one matching [ErrNotFound] if it does not exist, and one
	// matching [ErrInvalidArgument] for an empty owner or a lease that is
	// not positive. A lease that expired but was not claimed by anyone else
	// is still owner's and is renewed.
	Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error
	// Claim leases to owner up to limit active sagas whose lease is
	// released or expired (LeaseUntil not after now), of the definitions
	// named in names (every definition when names is empty), least
	// recently updated first (UpdatedAt, then ID). Each claimed saga gets
	// LeaseOwner owner, LeaseUntil now plus lease, Attempts+1, Version+1
	// and UpdatedAt now, and is returned as it is after the claim.
	// Concurrent claims never return the same saga while its lease is
	// alive. It returns no sagas and a nil error when none is due, and an
	// error matching [ErrInvalidArgument] for an empty owner, a limit
	// below 1 or a lease that is not positive.
	Claim(ctx context.Context, owner string, names []string, limit int, lease time.Duration) ([]Record, error)
	// Log returns the saga's step log in Seq order (empty for a saga with
	// none), or an error matching [ErrNotFound].
	Log(ctx context.Context, id uuid.UUID) ([]Entry, error)
	// List returns the sagas f selects, in ID order, for operators and
	// monitoring. It returns an error matching [ErrInvalidArgument] if
	// f.Limit is below 1.
	List(ctx context.Context, f Filter) ([]Record, error)
	// Purge deletes up to limit sagas that ended well (Completed or
	// Compensated) and were last updated before before, with their logs,
	// and returns how many it deleted. Failed and Halted sagas are never
	// purged. It returns an error matching [ErrInvalidArgument] if limit
	// is below 1.
	Purge(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Clock tells the time. The orchestrator and the stores read the time
// only from their clock; outbox.Clock and the outboxtest clock satisfy it.
type Clock interface {
	Now() time.Time
}

// ClockFunc adapts a function to a [Clock].
type ClockFunc func() time.Time

// Now calls f().
func (f ClockFunc) Now() time.Time { return f() }

// SystemClock returns the clock of the system: time.Now in UTC.
func SystemClock() Clock {
	return ClockFunc(func() time.Time { return time.Now().UTC() })
}

// The Validate functions check the arguments of store methods as the
// contract requires, reporting every problem at once, each matching
// [ErrInvalidArgument]; stores call them before touching anything, so that
// every store refuses the same calls.

// ValidateRecord checks the arguments of [Store.Create].
func ValidateRecord(rec Record, lease time.Duration) error {
	var errs []error
	if rec.ID == uuid.Nil {
		errs = append(errs, fmt.Errorf("%w: zero saga ID", ErrInvalidArgument))
	}
	if rec.Name == "" {
		errs = append(errs, fmt.Errorf("%w: empty saga name", ErrInvalidArgument))
	}
	errs = validateCommon(errs, rec.Status, rec.Step, rec.Attempts)
	if rec.LeaseOwner != "" && lease <= 0 {
		errs = append(errs, fmt.Errorf("%w: lease must be positive, got %v", ErrInvalidArgument, lease))
	}
	return errors.Join(errs...)
}

// ValidateCheckpoint checks the argument of [Store.Save].
func ValidateCheckpoint(cp Checkpoint) error {
	var errs []error
	if cp.ID == uuid.Nil {
		errs = append(errs, fmt.Errorf("%w: zero saga ID", ErrInvalidArgument))
	}
	if cp.Version < 1 {
		errs = append(errs, fmt.Errorf("%w: version must be at least 1, got %d", ErrInvalidArgument, cp.Version))
	}
	errs = validateCommon(errs, cp.Status, cp.Step, cp.Attempts)
	if cp.Owner != "" && cp.Lease <= 0 {
		errs = append(errs, fmt.Errorf("%w: lease must be positive, got %v", ErrInvalidArgument, cp.Lease))
	}
	for i, e := range cp.Log {
		if e.Phase != Forward && e.Phase != Compensation {
			errs = append(errs, fmt.Errorf("%w: log entry %d: invalid phase %v", ErrInvalidArgument, i, e.Phase))
		}
		if e.Outcome < Succeeded || e.Outcome > HaltedOutcome {
			errs = append(errs, fmt.Errorf("%w: log entry %d: invalid outcome %v", ErrInvalidArgument, i, e.Outcome))
		}
	}
	return errors.Join(errs...)
}

func validateCommon(errs []error, s Status, step, attempts int) []error {
	if !s.Valid() {
		errs = append(errs, fmt.Errorf("%w: invalid status %v", ErrInvalidArgument, s))
	}
	if step < 0 {
		errs = append(errs, fmt.Errorf("%w: negative step %d", ErrInvalidArgument, step))
	}
	if attempts < 0 {
		errs = append(errs, fmt.Errorf("%w: negative attempts %d", ErrInvalidArgument, attempts))
	}
	return errs
}

// ValidateLease checks the owner and lease of [Store.Renew] and, with a
// limit, of [Store.Claim] (pass limit 1 for Renew).
func ValidateLease(owner string, limit int, lease time.Duration) error {
	var errs []error
	if owner == "" {
		errs = append(errs, fmt.Errorf("%w: empty owner", ErrInvalidArgument))
	}
	if limit < 1 {
		errs = append(errs, fmt.Errorf("%w: limit must be at least 1, got %d", ErrInvalidArgument, limit))
	}
	if lease <= 0 {
		errs = append(errs, fmt.Errorf("%w: lease must be positive, got %v", ErrInvalidArgument, lease))
	}
	return errors.Join(errs...)
}

// ValidateLimit checks the limit of [Store.List] and [Store.Purge].
func ValidateLimit(limit int) error {
	if limit < 1 {
		return fmt.Errorf("%w: limit must be at least 1, got %d", ErrInvalidArgument, limit)
	}
	return nil
}
