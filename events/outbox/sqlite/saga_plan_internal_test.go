package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/mediator/saga"
)

// TestSagaQueryPlansUseIndexes guards the indexes of the saga schema: a
// saga is found by its ID, its log by its saga's range of the log's
// primary key, the due sagas in the partial index of the active ones, the
// purgeable ones in that of the ended ones. None scans a table.
func TestSagaQueryPlansUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "plans.db"), Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	s, err := NewSagaStore(db, SagaStoreOptions{Table: "flows", LogTable: "flow_steps"})
	require.NoError(t, err)
	require.NoError(t, s.EnsureSchema(ctx))

	const byID = "SEARCH flows USING INDEX sqlite_autoindex_flows_1 (id=?)"
	for _, tt := range []struct {
		name, query string
		want        []string
	}{
		{"load", s.q.load, []string{byID}},
		{"save", s.q.save, []string{byID}},
		{"save keeping the status", s.q.saveKeep, []string{byID}},
		{"version", s.q.version, []string{byID}},
		{"exists", s.q.exists, []string{"SEARCH flows USING COVERING INDEX sqlite_autoindex_flows_1 (id=?)"}},
		{"renew", s.q.renew, []string{byID}},
		{"log insert", s.q.logInsert, []string{"SEARCH flow_steps USING PRIMARY KEY (saga_id=?)"}},
		{"log", s.q.log, []string{"SEARCH flow_steps USING PRIMARY KEY (saga_id=?)"}},
		{"due", s.q.dueAll, []string{"SCAN flows USING INDEX flows_active"}},
		{"due by name", s.q.dueNames, []string{"SEARCH flows USING INDEX flows_active (name=?)"}},
		{"claim", s.q.claim, []string{"SEARCH flows USING COVERING INDEX sqlite_autoindex_flows_1 (id=?)"}},
		{"list", s.q.list, []string{"SEARCH flows USING INDEX sqlite_autoindex_flows_1 (id>?)"}},
		{"purge", s.q.purge, []string{"SEARCH flows USING COVERING INDEX flows_ended (updated_at<?)", "SEARCH flows USING COVERING INDEX sqlite_autoindex_flows_1 (id=?)"}},
		{"purge log", s.q.purgeLog, []string{"SEARCH flow_steps USING PRIMARY KEY (saga_id=?)"}},
	} {
		rows, err := db.sql.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tt.query, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
		require.NoError(t, err, tt.name)
		var plan []string
		require.NoError(t, readRows(rows, func(rows *sql.Rows) error {
			var id, parent, unused int
			var detail string
			err := rows.Scan(&id, &parent, &unused, &detail)
			plan = append(plan, detail)
			return err
		}), tt.name)
		text := strings.Join(plan, "\n")
		for _, w := range tt.want {
			assert.Contains(t, text, w, tt.name)
		}
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN flow") && !strings.Contains(step, "INDEX") {
				t.Errorf("%s scans a table:\n%s", tt.name, text)
			}
		}
	}
}

// TestSagaCheckpointPages guards what a step's checkpoint writes: the
// saga's row and its log entry, two pages, and no index page while the
// saga stays active (a checkpoint that changes the status also updates the
// partial indexes).
func TestSagaCheckpointPages(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "pages.db"), Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	s, err := NewSagaStore(db, SagaStoreOptions{})
	require.NoError(t, err)
	require.NoError(t, s.EnsureSchema(ctx))
	var ids []uuid.UUID
	for range 100 {
		rec := saga.Record{ID: uuid.Must(uuid.NewV7()), Name: "orders", Status: saga.Running, State: []byte(`{"n":0}`), LeaseOwner: "o"}
		require.NoError(t, s.Create(ctx, rec, time.Minute))
		ids = append(ids, rec.ID)
	}
	// framesSince returns the frames written to the WAL since the last
	// call, and empties it.
	framesSince := func() int {
		var busy, frames, done int
		require.NoError(t, db.sql.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done))
		require.NoError(t, db.sql.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &done, &done))
		require.Zero(t, busy)
		return frames
	}
	entry := saga.Entry{Step: "a", Phase: saga.Forward, Outcome: saga.Succeeded, Attempts: 1, Owner: "o"}
	framesSince()
	require.NoError(t, s.Save(ctx, saga.Checkpoint{ID: ids[50], Version: 1, Status: saga.Running, Step: 1,
		State: []byte(`{"n":1}`), Owner: "o", Lease: time.Minute, Log: []saga.Entry{entry}}))
	assert.Equal(t, 2, framesSince(), "a checkpoint that keeps the saga running: its row and its log entry")
	require.NoError(t, s.Save(ctx, saga.Checkpoint{ID: ids[50], Version: 2, Status: saga.Completed, Step: 2,
		State: []byte(`{"n":2}`), Log: []saga.Entry{entry}}))
	assert.Greater(t, framesSince(), 2, "completing the saga moves it between the partial indexes")
}
