package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"regexp"
	"strings"
)

// Default table names.
const (
	DefaultOutboxTable = "cqrs_outbox"
	DefaultInboxTable  = "cqrs_inbox"
)

//go:embed schema/*.sql
var schemaFiles embed.FS

// SchemaFS returns the DDL of the tables, for a migration tool: the files
// schema/outbox.sql, schema/inbox.sql and schema/saga.sql, with the default
// table names ([DefaultOutboxTable], [DefaultInboxTable],
// [DefaultSagaTable] and [DefaultSagaLogTable]).
// [OutboxSchema], [InboxSchema] and [SagaSchema] return them for other
// names. The statements are idempotent (CREATE … IF NOT EXISTS).
func SchemaFS() embed.FS { return schemaFiles }

// identifier is what a table name may be: an SQL identifier that needs no
// quoting, with room for the index names derived from it.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// validTable checks a table name given in options.
func validTable(field, name string) error {
	if !identifier.MatchString(name) || strings.HasPrefix(strings.ToLower(name), "sqlite_") {
		return fmt.Errorf("%w: %s %q must be a letter or underscore followed by up to 47 letters, digits or underscores, not starting with sqlite_",
			ErrInvalidOptions, field, name)
	}
	return nil
}

// ddl returns the schema file for the default table def, with the table
// named table: every identifier of the file that starts with the table
// name is double-quoted, so replacing the quoted prefix renames the table
// and its indexes.
func ddl(file, def, table string) string {
	b, err := schemaFiles.ReadFile(file)
	if err != nil {
		panic("sqlite: embedded schema missing: " + err.Error()) // a build error
	}
	return rename(string(b), def, table)
}

// rename replaces the quoted identifiers that start with def by the same
// identifiers starting with table.
func rename(sqlText, def, table string) string {
	return strings.ReplaceAll(sqlText, `"`+def, `"`+table)
}

// OutboxSchema returns the DDL of an outbox table named table (and of its
// indexes, named after it). It returns an error matching
// [ErrInvalidOptions] for an invalid name.
func OutboxSchema(table string) (string, error) {
	if err := validTable("table", table); err != nil {
		return "", err
	}
	return ddl("schema/outbox.sql", DefaultOutboxTable, table), nil
}

// InboxSchema returns the DDL of an inbox table named table (and of its
// index). It returns an error matching [ErrInvalidOptions] for an invalid
// name.
func InboxSchema(table string) (string, error) {
	if err := validTable("table", table); err != nil {
		return "", err
	}
	return ddl("schema/inbox.sql", DefaultInboxTable, table), nil
}

// ensureSchema runs the idempotent DDL in a write transaction (BEGIN
// IMMEDIATE): processes starting at once on one file run it one after the
// other, and all but the first find the tables there.
func (d *DB) ensureSchema(ctx context.Context, ddl string) error {
	return d.inOwnTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("sqlite: create schema: %w", err)
		}
		return nil
	})
}
