package postgres

import (
	"context"
	"embed"
	"fmt"
	"regexp"
	"strings"
)

// Default names.
const (
	DefaultOutboxTable = "cqrs_outbox"
	DefaultInboxTable  = "cqrs_inbox"
)

// schemaLockKey is the key of the transaction-level advisory lock that
// EnsureSchema takes, so that processes starting at once run the DDL one
// after the other ("gocqrspg" in ASCII).
const schemaLockKey int64 = 0x676f637172737067

//go:embed schema/*.sql
var schemaFiles embed.FS

// SchemaFS returns the DDL of the tables, for a migration tool: the files
// schema/outbox.sql, schema/inbox.sql and schema/saga.sql, with the
// default table names ([DefaultOutboxTable], [DefaultInboxTable],
// [DefaultSagaTable] and [DefaultSagaLogTable]). [OutboxSchema],
// [InboxSchema] and [SagaSchema] return them for other names. The
// statements are idempotent (CREATE … IF NOT EXISTS).
func SchemaFS() embed.FS { return schemaFiles }

// identifier is what each part of a table or channel name may be: an SQL
// identifier that needs no quoting (it is quoted anyway, so its case is
// kept), with room for the index names derived from a table name.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,47}$`)

// table is a validated table name, possibly schema-qualified.
type table struct {
	schema, name string
}

// parseTable validates a table name given in options: "name" or
// "schema.name".
func parseTable(field, s string) (table, error) {
	schema, name, qualified := strings.Cut(s, ".")
	if !qualified {
		schema, name = "", s
	}
	var t table
	if (qualified && !identifier.MatchString(schema)) || !identifier.MatchString(name) {
		return t, fmt.Errorf("%w: %s %q must be a name or schema.name, each a letter or underscore followed by up to 47 letters, digits or underscores",
			ErrInvalidOptions, field, s)
	}
	if strings.HasPrefix(strings.ToLower(schema), "pg_") {
		return t, fmt.Errorf("%w: %s %q: schema names starting with pg_ are reserved", ErrInvalidOptions, field, s)
	}
	return table{schema: schema, name: name}, nil
}

// String returns the name as given.
func (t table) String() string {
	if t.schema == "" {
		return t.name
	}
	return t.schema + "." + t.name
}

// ident returns the quoted, qualified name for SQL.
func (t table) ident() string {
	if t.schema == "" {
		return quote(t.name)
	}
	return quote(t.schema) + "." + quote(t.name)
}

// quote double-quotes a validated identifier.
func quote(id string) string { return `"` + id + `"` }

// ddl returns the schema file for the default table def, for table t: the
// quoted table name becomes t's qualified name, and the quoted names
// derived from it (indexes, constraints) start with t's name; a
// schema-qualified table gets a CREATE SCHEMA IF NOT EXISTS first.
func ddl(file, def string, t table) string {
	b, err := schemaFiles.ReadFile(file)
	if err != nil {
		panic("postgres: embedded schema missing: " + err.Error()) // a build error
	}
	r := strings.NewReplacer(quote(def), t.ident(), `"`+def+`_`, `"`+t.name+`_`)
	out := r.Replace(string(b))
	if t.schema != "" {
		out = "CREATE SCHEMA IF NOT EXISTS " + quote(t.schema) + ";\n\n" + out
	}
	return out
}

// OutboxSchema returns the DDL of an outbox table named table ("name" or
// "schema.name"), its indexes and constraints (named after it), and its
// schema. It returns an error matching [ErrInvalidOptions] for an invalid
// name.
func OutboxSchema(table string) (string, error) {
	t, err := parseTable("table", table)
	if err != nil {
		return "", err
	}
	return ddl("schema/outbox.sql", DefaultOutboxTable, t), nil
}

// InboxSchema returns the DDL of an inbox table named table ("name" or
// "schema.name"), its index and its schema. It returns an error matching
// [ErrInvalidOptions] for an invalid name.
func InboxSchema(table string) (string, error) {
	t, err := parseTable("table", table)
	if err != nil {
		return "", err
	}
	return ddl("schema/inbox.sql", DefaultInboxTable, t), nil
}

// ensureSchema runs idempotent DDL in a transaction of its own that first
// takes a transaction-level advisory lock: processes that start at once
// run it one after the other, and all but the first find everything there
// (concurrent CREATE … IF NOT EXISTS may otherwise fail on the catalog's
// unique indexes).
func (d *DB) ensureSchema(ctx context.Context, ddl string) error {
	st, err := d.begin(ctx)
	if err != nil {
		return err
	}
	ctx = st.context(ctx)
	err = do(ctx, func(q querier) error {
		if _, err := q.exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey); err != nil {
			return err
		}
		_, err := q.exec(ctx, ddl)
		return err
	})
	if err != nil {
		_ = st.rollback(ctx) // the DDL's error is the one to report
		return fmt.Errorf("postgres: create schema: %w", err)
	}
	if err := st.commit(ctx); err != nil {
		return fmt.Errorf("postgres: create schema: commit: %w", err)
	}
	return nil
}
