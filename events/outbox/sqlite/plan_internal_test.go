package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQueryPlansUseIndexes guards the indexes of the schema: the claim
// walks the pending rows in Seq order and looks up the earlier rows of
// each key; marks find rows by event ID; retention, dead-row listing and
// inbox purges use their own indexes. None scans the table.
func TestQueryPlansUseIndexes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "plans.db"), Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	s, err := NewStore(db, StoreOptions{Table: "events_out"})
	require.NoError(t, err)
	require.NoError(t, s.EnsureSchema(ctx))
	in, err := NewInbox(db, InboxOptions{Table: "events_in"})
	require.NoError(t, err)
	require.NoError(t, in.EnsureSchema(ctx))

	for _, tt := range []struct {
		name, query string
		want        []string
	}{
		{"claim", s.q.claim, []string{"SCAN o USING COVERING INDEX events_out_pending", "SEARCH p USING COVERING INDEX events_out_key (partition_key=? AND seq<?)"}},
		{"mark sent", s.q.markSent, []string{"SEARCH events_out USING INDEX sqlite_autoindex_events_out_1 (event_id=?)"}},
		{"mark failed", s.q.markFailed, []string{"SEARCH events_out USING INDEX sqlite_autoindex_events_out_1 (event_id=?)"}},
		{"release", s.q.release, []string{"SEARCH events_out USING INDEX sqlite_autoindex_events_out_1 (event_id=?)"}},
		{"get", s.q.get, []string{"SEARCH events_out USING INDEX sqlite_autoindex_events_out_1 (event_id=?)"}},
		{"stats", s.q.stats, []string{"COVERING INDEX events_out_pending", "COVERING INDEX events_out_sent", "COVERING INDEX events_out_dead"}},
		{"list dead", s.q.listDead, []string{"SEARCH events_out USING INDEX events_out_dead (seq>?)"}},
		{"requeue all", s.q.requeueAll, []string{"USING INDEX events_out_dead"}},
		{"delete sent", s.q.deleteSent, []string{"SEARCH events_out USING COVERING INDEX events_out_sent (sent_at<?)"}},
		{"purge", in.q.purge, []string{"SEARCH events_in USING COVERING INDEX events_in_recorded_at (recorded_at<?)"}},
		{"seen", in.q.seen, []string{"SEARCH events_in USING PRIMARY KEY (consumer=? AND event_id=?)"}},
	} {
		rows, err := db.sql.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tt.query, 1, 2, 3, 4, 5)
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
			if strings.HasPrefix(step, "SCAN events_") && !strings.Contains(step, "INDEX") {
				t.Errorf("%s scans a table:\n%s", tt.name, text)
			}
		}
	}
}
