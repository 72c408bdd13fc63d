package postgres

// The statements of a Store, for the hand-written loop the benchmarks
// compare the relay with.

// ClaimSQL returns the statement of s.Claim.
func ClaimSQL(s *Store) string { return s.q.claim }

// MarkSentSQL returns the statement of s.MarkSent.
func MarkSentSQL(s *Store) string { return s.q.markSent }
